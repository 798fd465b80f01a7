//! `cargo xtask bench`: what graceful restarts cost, measured and written into BENCHMARKS.md,
//! one section per benchmark ([`Section`], one file each), each between its own markers.
//!
//! Targets are reported as met or missed; a missed target does not fail the command (timings
//! are no pass/fail verdicts on a shared 2-core machine).

pub(crate) mod markdown;
mod memory;
mod overhead;
mod restart;
mod versus;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::value_parser;

use crate::cli::count;
use crate::harness::demo::{self, Config, Demo, Files};
use crate::harness::group::ServerGroup;
use crate::harness::machine::{Machine, today_utc};
use crate::harness::{cargo, prepare};

/// The sections of BENCHMARKS.md `bench` measures and rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// gracedown's tracking against bare tokio (cargo bench -p gracedown --bench overhead)
    Overhead,
    /// gracedemo against the same handler on a bare hyper-util server (examples/bare.rs), same
    /// load tool (oha), same run, alternated
    Http,
    /// restart latency: signal to new pid answering, and to old pid exit; idle and loaded; of
    /// the default build and of a statically linked one
    Restart,
    /// resident memory idle and with many idle keep-alive connections
    Memory,
}

/// The bench's flags. Without SECTION, all of them.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Sections to measure (all of them when none is named)
    #[arg(value_enum, value_name = "SECTION")]
    sections: Vec<Section>,
    /// Runs of each variant for `http` (at least 5)
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = count(5..=1000))]
    http_runs: usize,
    /// Seconds of load per run and variant for `http`
    #[arg(long, value_name = "S", default_value_t = 3.0, value_parser = seconds)]
    http_secs: f64,
    /// Restarts for `restart`, idle and under load each
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = count(1..=10_000))]
    restarts: usize,
    /// Idle keep-alive connections for `memory`
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = count(1..=100_000))]
    idle_conns: usize,
    /// `overhead`: runs (passed to the benchmark, as are the four below)
    #[arg(long, value_name = "N", value_parser = value_parser!(u64).range(1..))]
    runs: Option<u64>,
    /// `overhead`: connections
    #[arg(long, value_name = "N", value_parser = value_parser!(u64).range(1..))]
    conns: Option<u64>,
    /// `overhead`: message size
    #[arg(long, value_name = "BYTES", value_parser = value_parser!(u64).range(1..))]
    size: Option<u64>,
    /// `overhead`: warm-up of each variant in each run
    #[arg(long, value_name = "N", value_parser = value_parser!(u64).range(1..))]
    warmup_ms: Option<u64>,
    /// `overhead`: measured time of each variant in each run
    #[arg(long, value_name = "N", value_parser = value_parser!(u64).range(1..))]
    measure_ms: Option<u64>,
}

/// `--http-secs`: from half a second to ten minutes.
fn seconds(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| (0.5..=600.0).contains(v))
        .ok_or_else(|| "expected seconds from 0.5 to 600".to_owned())
}

impl Args {
    /// The sections named, each once; all of them for none.
    fn selected(&self) -> Vec<Section> {
        let all = [
            Section::Overhead,
            Section::Http,
            Section::Restart,
            Section::Memory,
        ];
        crate::cli::each_once(&self.sections, &all)
    }

    /// The flags for the `overhead` benchmark, as given.
    fn overhead_args(&self) -> Vec<String> {
        [
            ("--runs", self.runs),
            ("--conns", self.conns),
            ("--size", self.size),
            ("--warmup-ms", self.warmup_ms),
            ("--measure-ms", self.measure_ms),
        ]
        .into_iter()
        .filter_map(|(flag, v)| Some([flag.to_owned(), v?.to_string()]))
        .flatten()
        .collect()
    }
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

impl Ctx {
    /// A given build of gracedemo, running, for a benchmark.
    pub(crate) fn demo_of(&self, binary: &Path, name: &str) -> Result<Demo> {
        let files = Files {
            binary: binary.to_owned(),
            tls: None,
            dir: self.dir.clone(),
        };
        Demo::start(&files, name, Config::default())
    }

    /// The bare server on `addrs`, running, with its pid.
    pub(crate) fn bare(&self, addrs: &[SocketAddr], name: &str) -> Result<(ServerGroup, u32)> {
        let mut cmd = Command::new(&self.bare);
        for addr in addrs {
            cmd.arg("--http").arg(addr.to_string());
        }
        let log = self.dir.join(format!("{name}.log"));
        let group = ServerGroup::spawn(cmd, &self.bare, &log)?;
        let addr = addrs.first().context("the bare server needs an address")?;
        let pid = demo::await_pid(&group, *addr, Duration::from_secs(10))?;
        Ok((group, pid))
    }
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let sections = args.selected();
    let root = cargo::workspace_root()?;
    if sections.contains(&Section::Overhead) {
        overhead::run(&root, &args.overhead_args())?;
    }
    if sections.iter().all(|s| *s == Section::Overhead) {
        return Ok(());
    }
    let prepared = prepare("bench")?;
    let ctx = Ctx {
        gracedemo: prepared.gracedemo,
        bare: cargo::build_release("bare")?,
        oha: prepared.oha,
        dir: prepared.dir,
    };
    let machine = Machine::detect();
    let date = today_utc();
    let write = |begin: &str, end: &str, section: String| -> Result<()> {
        let path = markdown::update(&root, begin, end, &section)?;
        println!("{section}");
        println!("xtask: wrote {}", path.display());
        Ok(())
    };
    if sections.contains(&Section::Http) {
        let section = versus::run(&ctx, args.http_runs, args.http_secs, &machine, &date)?;
        write(versus::BEGIN, versus::END, section)?;
    }
    if sections.contains(&Section::Restart) {
        let build = |tag, label, binary| restart::Build { tag, label, binary };
        let mut builds = vec![build("dynamic", "default build", &ctx.gracedemo)];
        let statically = cargo::build_release_static("gracedemo")?;
        match &statically {
            Some(binary) => builds.push(build("static", "static build", binary)),
            None => {
                eprintln!("xtask: note: not a *-linux-gnu host; only the default build is measured")
            }
        }
        let section = restart::run(&ctx, &builds, args.restarts, &machine, &date)?;
        write(restart::BEGIN, restart::END, section)?;
    }
    if sections.contains(&Section::Memory) {
        let section = memory::run(&ctx, args.idle_conns, &machine, &date)?;
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
    use crate::cli::{assert_rejected, parse};

    #[test]
    fn parses_sections_and_routes_overhead_flags() {
        let o: Args = parse("http memory --runs 3 --http-runs=7 --idle-conns 100 http").unwrap();
        assert_eq!(o.selected(), vec![Section::Http, Section::Memory]);
        assert_eq!(o.overhead_args(), ["--runs", "3"]);
        assert_eq!((o.http_runs, o.idle_conns), (7, 100));
        assert_eq!(parse::<Args>("").unwrap().selected().len(), 4);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        assert_rejected::<Args>(&[
            "--http-runs 4",
            "--http-secs 0.1",
            "--restarts x",
            "--runs",
            "--runs 0",
            "--nope",
            "speed",
        ]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!((min(&[2.0, 1.0]), max(&[2.0, 1.0])), (1.0, 2.0));
    }
}
