//! `cargo xtask bench`: what graceful restarts cost, measured and written into BENCHMARKS.md,
//! one section per benchmark, each between its own markers:
//!
//! - `overhead`: gracedown's tracking against bare tokio (`cargo bench -p gracedown`);
//! - `http`: gracedemo against the same handler on a bare hyper-util server (`examples/bare.rs`),
//!   same load tool (oha), same run, alternated;
//! - `restart`: from signal to the new pid answering, and to the old pid's exit, idle and under
//!   keep-alive load, of the default build and of a statically linked one;
//! - `memory`: resident memory idle and with many idle keep-alive connections.
//!
//! Targets are reported as met or missed; a missed target does not fail the command (timings
//! are no pass/fail verdicts on a shared 2-core machine).

pub(crate) mod markdown;
mod memory;
mod overhead;
mod restart;
mod versus;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::restart_test::{build_release, build_release_static, load, proc, workspace_root};
use markdown::Machine;

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench [SECTION...] [options]

Measures and rewrites the matching sections of BENCHMARKS.md. Without SECTION, all of them.

sections:
  overhead   gracedown's tracking against bare tokio (cargo bench -p gracedown --bench overhead)
  http       gracedemo against the same handler on a bare hyper-util server (examples/bare.rs)
  restart    restart latency: signal to new pid answering, and to old pid exit; idle and loaded;
             of the default build and of a statically linked one
  memory     resident memory idle and with many idle keep-alive connections

options:
  --http-runs N     runs of each variant for `http` (default 5, at least 5)
  --http-secs S     seconds of load per run and variant for `http` (default 3)
  --restarts N      restarts for `restart`, idle and under load each (default 50)
  --idle-conns N    idle keep-alive connections for `memory` (default 10000)
  --runs N, --conns N, --size BYTES, --warmup-ms N, --measure-ms N
                    passed to the `overhead` benchmark
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Overhead,
    Http,
    Restart,
    Memory,
}

impl Section {
    const ALL: [Section; 4] = [
        Section::Overhead,
        Section::Http,
        Section::Restart,
        Section::Memory,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Overhead => "overhead",
            Section::Http => "http",
            Section::Restart => "restart",
            Section::Memory => "memory",
        }
    }
}

#[derive(Debug)]
struct Options {
    sections: Vec<Section>,
    overhead_args: Vec<String>,
    http_runs: usize,
    http_secs: f64,
    restarts: usize,
    idle_conns: usize,
}

fn number<T: std::str::FromStr + PartialOrd>(flag: &str, v: &str, lo: T, hi: T) -> Result<T> {
    v.parse::<T>()
        .ok()
        .filter(|n| *n >= lo && *n <= hi)
        .with_context(|| format!("invalid value {v:?} for {flag}: out of range or not a number"))
}

fn parse_args(args: &[String]) -> Result<Option<Options>> {
    let mut o = Options {
        sections: Vec::new(),
        overhead_args: Vec::new(),
        http_runs: 5,
        http_secs: 3.0,
        restarts: 50,
        idle_conns: 10_000,
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
            "-h" | "--help" => return Ok(None),
            "--http-runs" => o.http_runs = number(flag, &value()?, 5, 1000)?,
            "--http-secs" => o.http_secs = number(flag, &value()?, 0.5, 600.0)?,
            "--restarts" => o.restarts = number(flag, &value()?, 1, 10_000)?,
            "--idle-conns" => o.idle_conns = number(flag, &value()?, 1, 100_000)?,
            "--runs" | "--conns" | "--size" | "--warmup-ms" | "--measure-ms" => {
                let v = value()?;
                number::<u64>(flag, &v, 1, u64::MAX)?;
                o.overhead_args.extend([flag.to_owned(), v]);
            }
            f if f.starts_with('-') => bail!("unknown flag {f:?} (see cargo xtask bench --help)"),
            name => {
                let s = Section::ALL
                    .into_iter()
                    .find(|s| s.name() == name)
                    .with_context(|| {
                        format!(
                            "unknown section {name:?}; sections: {}",
                            Section::ALL.map(Section::name).join(", ")
                        )
                    })?;
                if !o.sections.contains(&s) {
                    o.sections.push(s);
                }
            }
        }
    }
    if o.sections.is_empty() {
        o.sections = Section::ALL.to_vec();
    }
    Ok(Some(o))
}

/// What the HTTP benchmarks share.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) gracedemo: PathBuf,
    pub(crate) bare: PathBuf,
    pub(crate) oha: PathBuf,
    /// Logs and oha's reports.
    pub(crate) dir: PathBuf,
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let Some(opts) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let root = workspace_root()?;
    if opts.sections.contains(&Section::Overhead) {
        overhead::run(&root, &opts.overhead_args)?;
    }
    if opts.sections.iter().all(|s| *s == Section::Overhead) {
        return Ok(());
    }
    proc::install_interrupt_handler().context("installing the Ctrl-C handler")?;
    proc::become_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    let gracedemo = build_release(&root, "gracedemo")?;
    let bare = build_release(&root, "bare")?;
    let dir = gracedemo
        .parent()
        .and_then(Path::parent)
        .context("the binary has no target directory")?
        .join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let oha = load::ensure_oha(&root)?;
    let ctx = Ctx {
        gracedemo,
        bare,
        oha,
        dir,
    };
    let machine = Machine::detect();
    let date = markdown::today_utc();
    let write = |begin: &str, end: &str, section: String| -> Result<()> {
        let path = markdown::update(&root, begin, end, &section)?;
        println!("{section}");
        println!("xtask: wrote {}", path.display());
        Ok(())
    };
    if opts.sections.contains(&Section::Http) {
        let section = versus::run(&ctx, opts.http_runs, opts.http_secs, &machine, &date)?;
        write(versus::BEGIN, versus::END, section)?;
    }
    if opts.sections.contains(&Section::Restart) {
        let mut builds = vec![restart::Build {
            tag: "dynamic",
            label: "default build",
            binary: &ctx.gracedemo,
        }];
        let statically = build_release_static(&root, "gracedemo")?;
        match &statically {
            Some(binary) => builds.push(restart::Build {
                tag: "static",
                label: "static build",
                binary,
            }),
            None => {
                eprintln!("xtask: note: not a *-linux-gnu host; only the default build is measured")
            }
        }
        let section = restart::run(&ctx, &builds, opts.restarts, &machine, &date)?;
        write(restart::BEGIN, restart::END, section)?;
    }
    if opts.sections.contains(&Section::Memory) {
        let section = memory::run(&ctx, opts.idle_conns, &machine, &date)?;
        write(memory::BEGIN, memory::END, section)?;
    }
    Ok(())
}

/// The median of `v` (sorted here), NaN for none.
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

/// The largest of `v`, NaN for none.
pub(crate) fn max(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::max).unwrap_or(f64::NAN)
}

/// The smallest of `v`, NaN for none.
pub(crate) fn min(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_sections_and_routes_overhead_flags() {
        let o = parse_args(&args("http memory --runs 3 --http-runs=7 --idle-conns 100"))
            .unwrap()
            .unwrap();
        assert_eq!(o.sections, vec![Section::Http, Section::Memory]);
        assert_eq!(o.overhead_args, args("--runs 3"));
        assert_eq!((o.http_runs, o.idle_conns), (7, 100));
        assert_eq!(parse_args(&[]).unwrap().unwrap().sections.len(), 4);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (line, flag) in [
            ("--http-runs 4", "--http-runs"),
            ("--restarts x", "--restarts"),
            ("--runs", "--runs"),
            ("--nope", "--nope"),
            ("speed", "speed"),
        ] {
            let e = format!("{:#}", parse_args(&args(line)).err().unwrap());
            assert!(e.contains(flag) && !e.contains('\n'), "{line}: {e}");
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!((min(&[2.0, 1.0]), max(&[2.0, 1.0])), (1.0, 2.0));
    }
}
