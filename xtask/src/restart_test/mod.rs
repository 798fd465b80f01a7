//! `cargo xtask restart-test`: restart scenarios against `gracedemo` under real load; fails on
//! any lost request, more than two generations alive at once, descriptor or memory growth
//! across restarts, or a zombie.
//!
//! The harness builds gracedemo in release, makes a throwaway CA for TLS, installs oha when
//! missing, becomes a subreaper (so every generation, orphaned by its parent's exit, is ours to
//! reap), and runs each scenario against a server of its own on fresh loopback ports. Each
//! server runs in its own process group, killed whatever happens (error, panic, Ctrl-C).
//! Beside each HTTP/2 load from oha runs the in-tree HTTP/2 client (`h2load`), which retries
//! only what RFC 9113 says the server did not process, so that every request it fails is lost.

mod clients;
pub(crate) mod group;
pub(crate) mod h2load;
pub(crate) mod http;
pub(crate) mod json;
pub(crate) mod load;
pub(crate) mod proc;
pub(crate) mod report;
mod scenarios;
pub(crate) mod server;
mod tls;
mod verdict;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use json::Json;
use load::Kind;
use report::ScenarioResult;
use scenarios::Scenario;
use server::{Demo, Files};

pub(crate) const USAGE: &str = "\
usage: cargo xtask restart-test [SCENARIO...] [options]

Runs restart scenarios against gracedemo (built in release) under load from oha, and fails on
any lost request, more than two live generations, descriptor or memory growth across restarts,
a zombie, or (sigterm) a process that outlives its stop timeout. Without SCENARIO, all of them.

options:
  --short          a few restarts and seconds of load per scenario (what CI runs)
  --restarts N     restarts per scenario (default 20; with --short 3)
  --interval DUR   time between restarts under load (default 1500ms; slow: at least 6s)
  --rate N         requests per second for every load (default: half of what an unthrottled
                   oha burst measures, once per kind of load and run)
  --json PATH      also write the report as JSON
  --verbose        print every restart of every scenario
  --list           list the scenarios with their verdicts, and exit
  -h, --help       print this text

DUR: a number with a unit: 500ms, 2s, 1m.
";

#[derive(Debug, Clone)]
pub(crate) struct Options {
    scenarios: Vec<Scenario>,
    short: bool,
    restarts: Option<usize>,
    interval: Option<Duration>,
    rate: Option<u64>,
    json: Option<PathBuf>,
    verbose: bool,
}

enum Parsed {
    Run(Options),
    Help,
    List,
}

fn parse_args(args: &[String]) -> Result<Parsed> {
    let mut o = Options {
        scenarios: Vec::new(),
        short: false,
        restarts: None,
        interval: None,
        rate: None,
        json: None,
        verbose: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--list" => return Ok(Parsed::List),
            "--short" => o.short = true,
            "--verbose" => o.verbose = true,
            "--restarts" => {
                let v = value()?;
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .with_context(|| {
                        format!("invalid value {v:?} for --restarts: expected 1 to 1000")
                    })?;
                o.restarts = Some(n);
            }
            "--interval" => {
                let v = value()?;
                let d = parse_duration(&v)
                    .filter(|d| (Duration::from_millis(200)..=Duration::from_secs(600)).contains(d))
                    .with_context(|| {
                        format!(
                            "invalid value {v:?} for --interval: expected 200ms to 10m, like 1500ms"
                        )
                    })?;
                o.interval = Some(d);
            }
            "--rate" => {
                let v = value()?;
                let n: u64 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000_000).contains(n))
                    .with_context(|| format!("invalid value {v:?} for --rate: expected requests per second, 1 or more"))?;
                o.rate = Some(n);
            }
            "--json" => {
                let v = value()?;
                if v.is_empty() {
                    bail!("invalid value for --json: empty path");
                }
                o.json = Some(PathBuf::from(v));
            }
            f if f.starts_with('-') => {
                bail!("unknown flag {f:?} (see cargo xtask restart-test --help)")
            }
            name => {
                let s = Scenario::from_name(name).with_context(|| {
                    format!(
                        "unknown scenario {name:?}; scenarios: {}",
                        Scenario::ALL.map(Scenario::name).join(", ")
                    )
                })?;
                if !o.scenarios.contains(&s) {
                    o.scenarios.push(s);
                }
            }
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = Scenario::ALL.to_vec();
    }
    Ok(Parsed::Run(o))
}

/// `500ms`, `2s`, `1.5s`, `1m`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// What every scenario shares.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) files: Files,
    pub(crate) ca: PathBuf,
    pub(crate) oha: PathBuf,
    pub(crate) opts: Options,
    /// Requests per second an unthrottled burst reached, per kind of load.
    capacity: RefCell<BTreeMap<Kind, f64>>,
}

impl Env {
    pub(crate) fn restarts(&self) -> usize {
        self.opts
            .restarts
            .unwrap_or(if self.opts.short { 3 } else { 20 })
    }

    pub(crate) fn interval(&self) -> Duration {
        self.opts.interval.unwrap_or(Duration::from_millis(1500))
    }

    pub(crate) fn work(&self) -> &Path {
        &self.files.dir
    }

    /// The rate for `kind`: `--rate`, or half of what an unthrottled burst against `demo`
    /// reaches (measured once per kind and run).
    pub(crate) fn rate(&self, kind: Kind, demo: &Demo) -> Result<(u64, Option<f64>)> {
        if let Some(rate) = self.opts.rate {
            return Ok((rate, None));
        }
        let known = self.capacity.borrow().get(&kind).copied();
        let capacity = match known {
            Some(c) => c,
            None => {
                let secs = if self.opts.short { 1.0 } else { 2.0 };
                eprintln!(
                    "xtask: measuring what the machine does for {} ({secs} s burst)",
                    kind.name()
                );
                let ca = kind.tls.then_some(self.ca.as_path());
                let c = load::capacity(&self.oha, kind, &demo.url(kind)?, ca, self.work(), secs)?;
                self.capacity.borrow_mut().insert(kind, c);
                c
            }
        };
        Ok((((capacity / 2.0) as u64).max(100), Some(capacity)))
    }
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = match parse_args(args)? {
        Parsed::Help => {
            print!("{USAGE}");
            return Ok(());
        }
        Parsed::List => {
            for s in Scenario::ALL {
                println!("{:<18} {}", s.name(), s.verdict());
            }
            return Ok(());
        }
        Parsed::Run(o) => o,
    };
    proc::install_interrupt_handler().context("installing the Ctrl-C handler")?;
    proc::become_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    crate::test::install_missing()?;
    let started = Instant::now();
    let root = workspace_root()?;
    let binary = build_release(&root, "gracedemo")?;
    let dir = binary
        .parent()
        .and_then(Path::parent)
        .context("the binary has no target directory")?
        .join("restart-test");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let certs = tls::generate(&dir.join("tls"))?;
    let oha = load::ensure_oha(&root)?;
    proc::check_interrupted()?;
    let env = Env {
        files: Files {
            binary,
            tls: Some((certs.cert.clone(), certs.key.clone())),
            dir: dir.clone(),
        },
        ca: certs.ca.clone(),
        oha,
        opts,
        capacity: RefCell::new(BTreeMap::new()),
    };
    let ready = started.elapsed();
    eprintln!(
        "xtask: restart-test: {} scenario(s), {} restarts each{}; logs in {}",
        env.opts.scenarios.len(),
        env.restarts(),
        if env.opts.short { " (short)" } else { "" },
        dir.display()
    );
    let mut results: Vec<ScenarioResult> = Vec::new();
    for &s in &env.opts.scenarios {
        eprintln!("xtask: scenario {} ...", s.name());
        let t = Instant::now();
        let result = match scenarios::run(&env, s) {
            Ok(r) => r,
            Err(e) => {
                proc::check_interrupted()?;
                let mut r = ScenarioResult {
                    name: s.name(),
                    ..ScenarioResult::default()
                };
                r.fail(format!("could not run: {e:#}"));
                r
            }
        };
        let mut result = result;
        result.duration = t.elapsed();
        eprintln!(
            "xtask: scenario {}: {} in {:.1} s",
            s.name(),
            if result.passed() { "ok" } else { "FAILED" },
            result.duration.as_secs_f64()
        );
        if env.opts.verbose {
            eprint!("{}", report::render_restarts(&result));
        }
        results.push(result);
        proc::check_interrupted()?;
    }
    println!("\n{}", report::render(&results));
    println!(
        "xtask: restart-test took {:.0} s ({:.0} s of it building and preparing)",
        started.elapsed().as_secs_f64(),
        ready.as_secs_f64()
    );
    if let Some(path) = &env.opts.json {
        let header = vec![
            (
                "date".to_owned(),
                Json::from(crate::bench::markdown::today_utc()),
            ),
            ("unix_time".to_owned(), Json::from(unix_now())),
            ("machine".to_owned(), machine_json()),
            ("short".to_owned(), env.opts.short.into()),
            ("restarts".to_owned(), env.restarts().into()),
            (
                "interval_ms".to_owned(),
                (env.interval().as_secs_f64() * 1000.0).into(),
            ),
            (
                "capacity_rps".to_owned(),
                Json::obj(
                    env.capacity
                        .borrow()
                        .iter()
                        .map(|(k, v)| (k.name(), Json::from(*v))),
                ),
            ),
            ("oha".to_owned(), load::OHA_VERSION.into()),
        ];
        let text = report::to_json(&results, header).render();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("xtask: wrote {}", path.display());
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    if failed > 0 {
        bail!("{failed} restart scenario(s) failed");
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn machine_json() -> Json {
    let nproc = std::thread::available_parallelism().map_or(1, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Json::obj([
        ("nproc", Json::from(nproc)),
        ("kernel", kernel.trim().into()),
    ])
}

pub(crate) fn workspace_root() -> Result<PathBuf> {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}

/// Builds `bin` of the examples package in release (`$CARGO build --release --locked`, the
/// workspace's own target directory) and returns the executable's path, as cargo reports it.
pub(crate) fn build_release(root: &Path, bin: &str) -> Result<PathBuf> {
    build(root, bin, None)
}

/// Builds `bin` as [`build_release`] does, but linked statically (glibc's static-pie:
/// `-C target-feature=+crt-static` added to `RUSTFLAGS`, which needs an explicit `--target`,
/// here cargo's host, so that build scripts and proc-macros stay dynamic). `Ok(None)` on a host
/// that is not `*-linux-gnu`.
pub(crate) fn build_release_static(root: &Path, bin: &str) -> Result<Option<PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {} -vV", cargo.to_string_lossy()))?;
    if !out.status.success() {
        bail!("{} -vV failed ({})", cargo.to_string_lossy(), out.status);
    }
    let info = String::from_utf8_lossy(&out.stdout);
    let host = info
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::trim)
        .with_context(|| format!("{} -vV named no host", cargo.to_string_lossy()))?;
    if !host.ends_with("-linux-gnu") {
        return Ok(None);
    }
    build(root, bin, Some(host)).map(Some)
}

fn build(root: &Path, bin: &str, static_target: Option<&str>) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "grace-examples",
        "--bin",
        bin,
        "--message-format=json-render-diagnostics",
    ]);
    let how = match static_target {
        Some(target) => {
            // Added to the flags the default build gets, if any, so that linking is the only
            // difference.
            let flags = match std::env::var("RUSTFLAGS") {
                Ok(f) if !f.trim().is_empty() => format!("{f} -C target-feature=+crt-static"),
                _ => "-C target-feature=+crt-static".to_owned(),
            };
            cmd.args(["--target", target]).env("RUSTFLAGS", flags);
            format!(
                "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --locked \
                 -p grace-examples --bin {bin} --target {target}"
            )
        }
        None => format!("cargo build --release --locked -p grace-examples --bin {bin}"),
    };
    eprintln!("xtask: building {bin} ({how})");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        bail!("building {bin} failed ({}): {how}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| Json::parse(l).ok())
        .filter(|m| m.get("reason") == Some(&Json::Str("compiler-artifact".into())))
        .filter(|m| m.get("target").and_then(|t| t.get("name")) == Some(&Json::Str(bin.into())))
        .find_map(|m| match m.get("executable") {
            Some(Json::Str(p)) => Some(PathBuf::from(p)),
            _ => None,
        })
        .with_context(|| format!("cargo did not report the executable of {bin}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_flags_and_scenarios() {
        let Parsed::Run(o) = parse_args(&args(
            "keepalive --short --restarts=5 --interval 2s tls --rate 100",
        ))
        .unwrap() else {
            panic!("not a run");
        };
        assert_eq!(o.scenarios, vec![Scenario::KeepAlive, Scenario::Tls]);
        assert!(o.short);
        assert_eq!(o.restarts, Some(5));
        assert_eq!(o.interval, Some(Duration::from_secs(2)));
        assert_eq!(o.rate, Some(100));
        let Parsed::Run(all) = parse_args(&[]).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(all.scenarios.len(), Scenario::ALL.len());
    }

    #[test]
    fn bad_flags_are_one_line_errors_naming_the_flag() {
        for (line, flag) in [
            ("--restarts", "--restarts"),
            ("--restarts x", "--restarts"),
            ("--restarts 0", "--restarts"),
            ("--interval 5", "--interval"),
            ("--interval 1h", "--interval"),
            ("--rate -1", "--rate"),
            ("--json=", "--json"),
            ("--bogus", "--bogus"),
            ("nosuch", "nosuch"),
        ] {
            let e = format!("{:#}", parse_args(&args(line)).err().unwrap());
            assert!(e.contains(flag) && !e.contains('\n'), "{line}: {e}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
