//! gracedown's overhead benchmark (`cargo bench -p gracedown --bench overhead`), recorded in
//! the "gracedown overhead" section of BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use super::{markdown, max, median, min};
use crate::harness::cargo;
use crate::harness::machine::{Machine, today_utc};

const BEGIN: &str = "<!-- gracedown-overhead:begin -->";
const END: &str = "<!-- gracedown-overhead:end -->";
/// Record prefix of the benchmark's machine-readable lines.
const PREFIX: &str = "gracedown-overhead";
/// The ratio the issue asks for.
const TARGET: f64 = 0.98;

struct Report {
    config: BTreeMap<String, String>,
    /// Per run: (bare rate, tracked rate), in run order.
    runs: Vec<(u64, f64, f64)>,
}

/// Runs the benchmark with `args` (its own flags) and rewrites its section.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut command = cargo::command(&[
        "bench",
        "-p",
        "gracedown",
        "--bench",
        "overhead",
        "--locked",
    ])?;
    if !args.is_empty() {
        command.arg("--").args(args);
    }
    eprintln!("xtask: running {command:?}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", cargo::describe(&command)))?;
    let stdout = child.stdout.take().context("benchmark stdout")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the benchmark's output")?;
        println!("{line}");
        lines.push(line);
    }
    let status = child.wait().context("waiting for the benchmark")?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }

    let report = parse(&lines)?;
    let section = render(&report, &Machine::detect(), &today_utc(), args);
    let path = markdown::update(root, BEGIN, END, &section)?;
    let (median, min, max) = report.stats();
    println!(
        "xtask: tracked / bare median {median:.3} (spread {min:.3}..{max:.3}) over {} runs; wrote {}",
        report.runs.len(),
        path.display()
    );
    Ok(())
}

/// `key=value` fields after the record name.
fn fields(rest: &str) -> BTreeMap<String, String> {
    rest.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn parse(lines: &[String]) -> Result<Report> {
    let mut config = None;
    // Rates by run, then by variant.
    let mut samples: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    for line in lines {
        let Some(record) = line.strip_prefix(PREFIX) else {
            continue;
        };
        let record = record.trim_start();
        let (kind, rest) = record.split_once(' ').unwrap_or((record, ""));
        let fields = fields(rest);
        match kind {
            "config" => config = Some(fields),
            "sample" => {
                let get = |key: &str| {
                    fields
                        .get(key)
                        .with_context(|| format!("sample line without {key}: {line}"))
                };
                let run: u64 = get("run")?
                    .parse()
                    .with_context(|| format!("run in {line}"))?;
                let rate: f64 = get("rate")?
                    .parse()
                    .with_context(|| format!("rate in {line}"))?;
                let variant = get("variant")?.clone();
                samples.entry(run).or_default().insert(variant, rate);
            }
            _ => {}
        }
    }
    let config = config.context("the benchmark printed no config line")?;
    let mut runs = Vec::new();
    for (run, rates) in samples {
        let rate = |variant: &str| {
            let rate = rates.get(variant).copied();
            rate.with_context(|| format!("run {run} has no {variant} sample"))
        };
        let (bare, tracked) = (rate("bare")?, rate("tracked")?);
        if bare <= 0.0 {
            bail!("run {run}: the bare server did no round trip");
        }
        runs.push((run, bare, tracked));
    }
    if runs.is_empty() {
        bail!("the benchmark printed no samples");
    }
    Ok(Report { config, runs })
}

impl Report {
    /// (median, min, max) of the per-run ratios.
    fn stats(&self) -> (f64, f64, f64) {
        let ratios: Vec<f64> = self
            .runs
            .iter()
            .map(|&(_, bare, tracked)| tracked / bare)
            .collect();
        (median(&ratios), min(&ratios), max(&ratios))
    }

    fn config(&self, key: &str) -> &str {
        self.config.get(key).map_or("?", String::as_str)
    }
}

fn render(report: &Report, machine: &Machine, date: &str, args: &[String]) -> String {
    let (median, min, max) = report.stats();
    let verdict = if median >= TARGET { "meets" } else { "misses" };
    let command = if args.is_empty() {
        "cargo xtask bench overhead".to_owned()
    } else {
        format!("cargo xtask bench overhead {}", args.join(" "))
    };
    let mut s = format!(
        "{BEGIN}\n## gracedown overhead\n\nThroughput of a loopback echo server through \
         gracedown's tracking (`TrackedListener`, `Tracked`, `Tracked::spawn`) relative to the \
         same server on bare tokio `TcpListener` / `TcpStream`, tracked / bare: **median \
         {median:.3}, spread {min:.3}..{max:.3}** over {} runs. That {verdict} the target of \
         {TARGET:.2} or better.\n\n",
        report.runs.len()
    );
    // `write!` to a String cannot fail.
    let _ = writeln!(
        s,
        "- Load: {} connections, each ping-ponging {}-byte messages (write one, read its echo); \
         clients and server in one process, on one tokio multi-thread runtime with {} workers. \
         Each run measures both variants, {} ms each after a {} ms warm-up, alternating which \
         goes first; one untimed pass of each precedes the first run.\n- Command: `{command}` \
         (it runs `cargo bench -p gracedown --bench overhead --locked` and rewrites this \
         section).\n{}\n| run | bare (round trips/s) | tracked (round trips/s) | tracked / bare \
         |\n|----:|---------------------:|------------------------:|---------------:|",
        report.config("conns"),
        report.config("size"),
        report.config("workers"),
        report.config("measure_ms"),
        report.config("warmup_ms"),
        markdown::machine_and_date(machine, date, ""),
    );
    for &(run, bare, tracked) in &report.runs {
        let _ = writeln!(
            s,
            "| {run} | {bare:.0} | {tracked:.0} | {:.3} |",
            tracked / bare
        );
    }
    let _ = writeln!(s, "{END}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let lines: Vec<String> = [
            "noise",
            "gracedown-overhead config conns=64 size=64 runs=2 warmup_ms=1 measure_ms=2 workers=2",
            "gracedown-overhead sample run=1 variant=bare round_trips=10 secs=1.0 rate=100.0",
            "gracedown-overhead sample run=1 variant=tracked round_trips=9 secs=1.0 rate=99.0",
            "gracedown-overhead sample run=2 variant=tracked round_trips=10 secs=1.0 rate=101.0",
            "gracedown-overhead sample run=2 variant=bare round_trips=10 secs=1.0 rate=100.0",
            "gracedown-overhead result runs=2 ratio_median=1.0000 ratio_min=0.99 ratio_max=1.01",
        ]
        .map(String::from)
        .to_vec();
        parse(&lines).unwrap()
    }

    #[test]
    fn parses_and_pairs_samples_by_run() {
        let report = report();
        assert_eq!(report.runs.len(), 2);
        let (median, min, max) = report.stats();
        assert!((median - 1.0).abs() < 1e-9);
        assert!((min - 0.99).abs() < 1e-9);
        assert!((max - 1.01).abs() < 1e-9);
        assert_eq!(report.config("conns"), "64");
    }

    #[test]
    fn renders_its_section_between_its_markers() {
        let s = render(
            &report(),
            &Machine::fake(),
            "2024-01-01",
            &["--runs".into()],
        );
        assert!(s.starts_with(BEGIN) && s.trim_end().ends_with(END), "{s}");
        assert!(s.contains("2024-01-01") && s.contains("`cargo xtask bench overhead --runs`"));
    }
}
