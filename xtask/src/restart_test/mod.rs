//! `cargo xtask restart-test`: restart scenarios against `gracedemo` under real load (what
//! each checks: [`Scenario`]; what all check: [`verdict::judge`]).
//!
//! The harness builds gracedemo in release, makes a throwaway CA for TLS, installs oha when
//! missing, becomes a subreaper (so every generation, orphaned by its parent's exit, is ours to
//! reap), and runs each scenario against a server of its own on fresh loopback ports. Each
//! server runs in its own process group, killed whatever happens (error, panic, Ctrl-C).
//! Beside each HTTP/2 load from oha runs the in-tree HTTP/2 client (`h2load`), which retries
//! only what RFC 9113 says the server did not process, so that every request it fails is lost.

mod clients;
mod h2load;
mod report;
mod scenarios;
mod verdict;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::value_parser;
use rustls::ClientConfig;
use testkit::certs::Ca;

use crate::cli::count;
use crate::harness::demo::{Demo, Files};
use crate::harness::load::{self, Kind};
use crate::harness::machine::{Machine, today_utc, unix_now};
use crate::harness::{interrupt, oha};
use report::ScenarioResult;
use scenarios::Scenario;

/// The restart-test's flags. Without SCENARIO, all of them.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Scenarios to run (all of them when none is named; `--list` says what each checks)
    #[arg(value_name = "SCENARIO")]
    scenarios: Vec<Scenario>,
    /// A few restarts and seconds of load per scenario (what CI runs)
    #[arg(long)]
    short: bool,
    /// Restarts per scenario [default: 20; with --short 3]
    #[arg(long, value_name = "N", value_parser = count(1..=1000))]
    restarts: Option<usize>,
    /// Time between restarts under load: a number with a unit, like 500ms, 2s, 1m
    /// [default: 1500ms; slow: at least 6s]
    #[arg(long, value_name = "DUR", value_parser = parse_interval)]
    interval: Option<Duration>,
    /// Requests per second for every load [default: half of what an unthrottled oha burst
    /// measures, once per kind of load and run]
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = value_parser!(u64).range(1..=10_000_000))]
    rate: Option<u64>,
    /// Also write the report as JSON
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Print every restart of every scenario
    #[arg(long)]
    verbose: bool,
    /// List the scenarios with their verdicts, and exit
    #[arg(long)]
    list: bool,
}

/// `--interval`: a duration from 200ms to 10m, in humantime's units (`500ms`, `1.5s`, `1m`).
fn parse_interval(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .ok()
        .filter(|d| (Duration::from_millis(200)..=Duration::from_secs(600)).contains(d))
        .ok_or_else(|| "expected 200ms to 10m, like 1500ms".to_owned())
}

/// What every scenario shares.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) files: Files,
    /// The throwaway CA's certificate, for oha (`--cacert`).
    pub(crate) ca: PathBuf,
    /// What the in-tree HTTP/2 client trusts (that CA alone) and offers (h2).
    pub(crate) h2_tls: Arc<ClientConfig>,
    pub(crate) oha: PathBuf,
    pub(crate) opts: Args,
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

    /// The run's settings, for the JSON report.
    fn header(&self) -> report::json::Header {
        report::json::Header {
            date: today_utc(),
            unix_time: unix_now(),
            machine: Machine::detect(),
            short: self.opts.short,
            restarts: self.restarts(),
            interval_ms: self.interval().as_secs_f64() * 1000.0,
            capacity_rps: self
                .capacity
                .borrow()
                .iter()
                .map(|(k, v)| (k.name(), *v))
                .collect(),
            oha: oha::VERSION,
        }
    }
}

impl Args {
    /// The scenarios named, each once; all of them for none.
    fn selected(&self) -> Vec<Scenario> {
        crate::cli::each_once(&self.scenarios, Scenario::all())
    }
}

pub(crate) fn run(opts: Args) -> Result<()> {
    if opts.list {
        for s in Scenario::all() {
            println!("{:<18} {}", s.name(), s.verdict());
        }
        return Ok(());
    }
    let scenarios = opts.selected();
    crate::test::install_missing()?;
    let started = Instant::now();
    let prepared = crate::harness::prepare("restart-test")?;
    let (ca, leaf, h2_tls) = tls(&prepared.dir.join("tls"))?;
    let env = Env {
        files: Files {
            binary: prepared.gracedemo,
            tls: Some(leaf),
            dir: prepared.dir,
        },
        ca,
        h2_tls,
        oha: prepared.oha,
        opts,
        capacity: RefCell::new(BTreeMap::new()),
    };
    let ready = started.elapsed();
    eprintln!(
        "xtask: restart-test: {} scenario(s), {} restarts each{}; logs in {}",
        scenarios.len(),
        env.restarts(),
        if env.opts.short { " (short)" } else { "" },
        env.work().display()
    );
    let mut results = Vec::new();
    for s in scenarios {
        results.push(run_one(&env, s)?);
    }
    println!("\n{}", report::render(&results));
    println!(
        "xtask: restart-test took {:.0} s ({:.0} s of it building and preparing)",
        started.elapsed().as_secs_f64(),
        ready.as_secs_f64()
    );
    if let Some(path) = &env.opts.json {
        let text = report::json::render(&env.header(), &results).context("the JSON report")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("xtask: wrote {}", path.display());
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    if failed > 0 {
        bail!("{failed} restart scenario(s) failed");
    }
    Ok(())
}

/// Mints a throwaway CA and a leaf for 127.0.0.1 and `localhost` signed by it, and writes
/// them into `dir`. Returns the CA's file (for oha's `--cacert`), the leaf's certificate and
/// key files (for `gracedemo --cert --key`), and the in-tree HTTP/2 client's TLS configuration
/// (trusting that CA alone, offering h2).
fn tls(dir: &Path) -> Result<(PathBuf, (PathBuf, PathBuf), Arc<ClientConfig>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = Ca::new()?;
    let (ca_pem, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    ca.leaf()?.write(&cert, &key)?;
    std::fs::write(&ca_pem, &ca.pem).with_context(|| format!("writing {}", ca_pem.display()))?;
    let client = testkit::tls::client_config(&ca.der, &[b"h2"]).context("the client's TLS")?;
    Ok((ca_pem, (cert, key), client))
}

/// One scenario; a scenario that could not run fails (an error only on Ctrl-C).
fn run_one(env: &Env, s: Scenario) -> Result<ScenarioResult> {
    eprintln!("xtask: scenario {} ...", s.name());
    let t = Instant::now();
    let mut result = scenarios::run(env, s).or_else(|e| {
        interrupt::check()?;
        let mut r = ScenarioResult::new(&s.name());
        r.fail(format!("could not run: {e:#}"));
        anyhow::Ok(r)
    })?;
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
    interrupt::check()?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{assert_rejected, parse};

    #[test]
    fn parses_flags_and_scenarios() {
        let line = "keepalive --short --restarts=5 --interval 2s tls --rate 100 tls";
        let o: Args = parse(line).unwrap();
        assert_eq!(o.selected(), vec![Scenario::KeepAlive, Scenario::Tls]);
        assert!(o.short);
        assert_eq!(o.restarts, Some(5));
        assert_eq!(o.interval, Some(Duration::from_secs(2)));
        assert_eq!(o.rate, Some(100));
        assert_eq!(parse::<Args>("").unwrap().selected(), Scenario::all());
    }

    #[test]
    fn bad_flags_are_errors_whose_first_line_names_the_flag() {
        assert_rejected::<Args>(&[
            "--restarts",
            "--restarts x",
            "--restarts 0",
            "--interval 5",
            "--interval 1h",
            "--rate -1",
            "--json=",
            "--bogus",
            "nosuch",
        ]);
    }

    #[test]
    fn parses_durations() {
        let parse = |s| parse_interval(s).ok();
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse("2"), None);
        assert_eq!(parse("s"), None);
        assert_eq!(parse("-1s"), None);
    }
}
