//! Restart latency: from `SIGUSR2` to the first answer from the new pid, and to the old pid's
//! exit, over many restarts, idle and under keep-alive load. The baseline, measured in the same
//! run and alternated with the restarts: a cold start of the same binary with the same flags,
//! from spawning it to its first answer, which an exec-based restart cannot beat by much (it
//! skips only the binds and the pid file).
//!
//! Two builds of gracedemo are measured: the one `cargo build --release` makes (dynamically
//! linked against glibc), and a statically linked one. Most of a restart is the new binary's
//! start-up, and the dynamic loader's share of it is what static linking removes.

use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Ctx, markdown, max, median, min};
use crate::harness::load::{self, Kind, Load};
use crate::harness::machine::Machine;
use crate::harness::restart::{RestartRecord, ms};
use crate::harness::{http, interrupt, oha, ports};

pub(crate) const BEGIN: &str = "<!-- restart-latency:begin -->";
pub(crate) const END: &str = "<!-- restart-latency:end -->";
/// Targets on the 2-core machine, in ms: under load median and max, idle median.
const LOADED_MEDIAN: f64 = 5.0;
const LOADED_MAX: f64 = 15.0;
const IDLE_MEDIAN: f64 = 3.0;
/// The probe's pause between attempts while waiting for the new pid.
const PROBE_PAUSE: Duration = Duration::from_micros(100);
/// Time between restarts under load.
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Series {
    to_new: Vec<f64>,
    to_exit: Vec<f64>,
    /// The cold start after each restart, ms.
    cold: Vec<f64>,
    /// Each restart's time to the new pid paired with the cold start after it.
    pairs: Vec<(f64, f64)>,
}

impl Series {
    fn from(records: &[RestartRecord], cold: Vec<f64>) -> Series {
        Series {
            to_new: records.iter().filter_map(|r| ms(r.to_new)).collect(),
            to_exit: records.iter().filter_map(|r| ms(r.to_old_exit)).collect(),
            pairs: records
                .iter()
                .zip(&cold)
                .filter_map(|(r, &c)| Some((ms(r.to_new)?, c)))
                .collect(),
            cold,
        }
    }

    fn ratios(&self) -> Vec<f64> {
        self.pairs.iter().map(|&(r, c)| r / c).collect()
    }

    fn append(&mut self, mut other: Series) {
        self.to_new.append(&mut other.to_new);
        self.to_exit.append(&mut other.to_exit);
        self.cold.append(&mut other.cold);
        self.pairs.append(&mut other.pairs);
    }
}

/// A cold-started gracedemo, killed and reaped when dropped (on every path, errors included).
struct Cold(Child);

impl Drop for Cold {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts gracedemo from scratch with the flags a restarted one has and returns the time from
/// the spawn to its first answer, probing as the restarts are probed.
fn cold_start(ctx: &Ctx, binary: &Path, i: usize) -> Result<f64> {
    let ports = ports::free(3)?;
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let pid_file = ctx.dir.join("bench-cold.pid");
    let log = File::create(ctx.dir.join("bench-cold.log")).context("creating bench-cold.log")?;
    let mut command = Command::new(binary);
    command
        .args(["--http", &addr(ports[0]), "--http", &addr(ports[1])])
        .args(["--admin", &addr(ports[2])])
        .arg("--pid-file")
        .arg(&pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let target = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let t0 = Instant::now();
    let child = Cold(command.spawn().context("starting gracedemo")?);
    let end = t0 + Duration::from_secs(10);
    while Instant::now() < end {
        interrupt::check()?;
        if let Ok(r) = http::get(target, "/pid", Duration::from_secs(1)) {
            if r.pid() != Some(child.0.id()) {
                bail!(
                    "cold start {i}: {target} answered {:?}, not gracedemo",
                    r.pid()
                );
            }
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            drop(child);
            return Ok(ms);
        }
        std::thread::sleep(PROBE_PAUSE);
    }
    bail!("cold start {i}: gracedemo did not answer on {target} within 10 s")
}

/// Half of what an unthrottled burst of keep-alive load gets from `build`: the fixed rate of
/// the load the restarts are measured under.
fn load_rate(ctx: &Ctx, build: &Build<'_>) -> Result<u64> {
    let mut demo = ctx.demo_of(build.binary, "bench-restart-capacity")?;
    let url = format!("http://127.0.0.1:{}/", demo.ports.http[0]);
    let capacity = load::capacity(&ctx.oha, Kind::KEEPALIVE, &url, None, &ctx.dir, 2.0)?;
    demo.stop()?;
    Ok((capacity / 2.0) as u64)
}

/// `n` restarts of `build`, idle or (with a rate) under keep-alive load at that rate.
fn restarts(
    ctx: &Ctx,
    build: &Build<'_>,
    n: usize,
    rate: Option<u64>,
    part: usize,
) -> Result<Series> {
    let name = format!(
        "bench-restart-{}-{}-{part}",
        build.tag,
        if rate.is_some() { "loaded" } else { "idle" }
    );
    let name = name.as_str();
    let mut demo = ctx.demo_of(build.binary, name)?;
    demo.probe_pause = PROBE_PAUSE;
    let mut running = None;
    if let Some(r) = rate {
        let url = format!("http://127.0.0.1:{}/", demo.ports.http[0]);
        let planned = INTERVAL * u32::try_from(n + 1).unwrap_or(u32::MAX);
        let l = Load {
            kind: Kind::KEEPALIVE,
            url,
            rate: Some(r),
            requests: (r as f64 * planned.as_secs_f64()) as u64,
            ca: None,
        };
        running = Some(load::start(
            &ctx.oha,
            &l,
            &ctx.dir.join(format!("{name}.json")),
            &ctx.dir.join(format!("{name}-oha.log")),
        )?);
        interrupt::sleep(INTERVAL / 2)?;
    }
    let mut cold = Vec::new();
    for i in 0..n {
        let t0 = Instant::now();
        // Probe until the old pid has exited (at most most of the interval).
        demo.restart(1, INTERVAL - Duration::from_millis(100))?;
        // The baseline, under the same conditions, once the restart is over.
        cold.push(cold_start(ctx, build.binary, i)?);
        if rate.is_some() {
            interrupt::sleep_until(t0 + INTERVAL)?;
        }
    }
    if let Some(r) = running {
        let result = r.finish()?;
        if result.outcomes.failed() > 0 {
            eprintln!(
                "xtask: note: the load during the restarts had failures: {}",
                result.outcomes.describe()
            );
        }
    }
    demo.stop()?;
    let records = std::mem::take(&mut demo.restarts);
    if records.iter().any(|r| r.to_new.is_none()) {
        bail!(
            "{name}: a restart had no new pid answering: {:?}",
            demo.failures
        );
    }
    Ok(Series::from(&records, cold))
}

/// A build of gracedemo to measure.
pub(crate) struct Build<'a> {
    /// For file names: `dynamic`, `static`.
    pub(crate) tag: &'static str,
    /// How the table names it.
    pub(crate) label: &'static str,
    pub(crate) binary: &'a Path,
}

/// One build, measured idle and under load.
struct Measured<'a> {
    build: &'a Build<'a>,
    idle: Series,
    loaded: Series,
}

/// `n` restarts of each build idle, then `n` under keep-alive load at one rate for all (half of
/// what the first build does unthrottled). Each series runs in two halves, the builds in the
/// order A B .. B A, so that a drift of the machine during the run weighs on every build alike.
pub(crate) fn run(
    ctx: &Ctx,
    builds: &[Build<'_>],
    n: usize,
    machine: &Machine,
    date: &str,
) -> Result<String> {
    let rate = match builds.first() {
        Some(first) => load_rate(ctx, first)?,
        None => bail!("no build to measure"),
    };
    let halves = [n.div_ceil(2), n / 2];
    let mut order: Vec<(usize, usize)> = (0..builds.len()).map(|b| (b, 0)).collect();
    order.extend((0..builds.len()).rev().map(|b| (b, 1)));
    let mut idle: Vec<Series> = builds.iter().map(|_| Series::default()).collect();
    let mut loaded: Vec<Series> = builds.iter().map(|_| Series::default()).collect();
    for (series, load) in [(&mut idle, None), (&mut loaded, Some(rate))] {
        for &(b, part) in &order {
            let count = halves[part];
            if count == 0 {
                continue;
            }
            eprintln!(
                "xtask: {} build: {count} restarts {}",
                builds[b].tag,
                if load.is_some() {
                    "under keep-alive load"
                } else {
                    "idle"
                }
            );
            series[b].append(restarts(ctx, &builds[b], count, load, part)?);
        }
    }
    let measured = builds
        .iter()
        .zip(idle.into_iter().zip(loaded))
        .map(|(build, (idle, loaded))| Measured {
            build,
            idle,
            loaded,
        })
        .collect::<Vec<_>>();
    Ok(section(&measured, n, rate, machine, date))
}

/// The latency table: each build idle and loaded, then its cold-start baselines.
fn table(s: &mut String, measured: &[Measured<'_>]) {
    let _ = writeln!(
        s,
        "| build | | to new pid, median | to new pid, max | to old exit, median | to old exit, max |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for m in measured {
        for (name, series) in [("idle", &m.idle), ("under keep-alive load", &m.loaded)] {
            let _ = writeln!(
                s,
                "| {} | {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                m.build.label,
                median(&series.to_new),
                max(&series.to_new),
                median(&series.to_exit),
                max(&series.to_exit)
            );
        }
        for (name, series) in [("idle", &m.idle), ("under keep-alive load", &m.loaded)] {
            let _ = writeln!(
                s,
                "| {} | baseline: cold start, {name} | {:.1} ms | {:.1} ms | | |",
                m.build.label,
                median(&series.cold),
                max(&series.cold)
            );
        }
    }
}

fn section(
    measured: &[Measured<'_>],
    n: usize,
    rate: u64,
    machine: &Machine,
    date: &str,
) -> String {
    let meets = |ok: bool| if ok { "meets" } else { "misses" };
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "## Restart latency\n");
    let _ = writeln!(
        s,
        "From `SIGUSR2` to the first answer from the new pid, and to the old pid's exit, over {n} \
         restarts of `gracedemo` each way. The new pid is found by a probe: `GET /pid` on a new \
         connection every {} µs from the signal on.\n",
        PROBE_PAUSE.as_micros()
    );
    if measured.len() > 1 {
        let _ = writeln!(
            s,
            "Two builds of the same code: the one `cargo build --release` makes, dynamically \
             linked against glibc, and a statically linked one (glibc static-pie). A restart is \
             mostly the new binary's start-up, and static linking removes the dynamic loader's \
             part of it (mapping and relocating three shared libraries) from every start, cold \
             or by restart. (Go programs built with `CGO_ENABLED=0`, as Go servers often are, \
             are statically linked as well.)\n"
        );
    }
    table(&mut s, measured);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "The baseline is the same binary with the same flags started from scratch, timed from \
         the spawn to its first answer on a new connection (probed the same way), once after \
         each restart: the process start-up (exec, dynamic loading, runtime threads) that any \
         exec-based restart pays too. A restart adds the signal's delivery and the parent's \
         preparation, and skips the binds and the pid file. Restart against the cold start \
         after it (to new pid / cold start, each pair):\n"
    );
    for m in measured {
        for (name, series) in [("idle", &m.idle), ("under keep-alive load", &m.loaded)] {
            let ratios = series.ratios();
            let _ = writeln!(
                s,
                "- {}, {name}: median {:.2}, spread {:.2}..{:.2} over {} pairs",
                m.build.label,
                median(&ratios),
                min(&ratios),
                max(&ratios),
                ratios.len()
            );
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Targets: under load, median at most {LOADED_MEDIAN} ms and max at most {LOADED_MAX} ms; \
         idle, median at most {IDLE_MEDIAN} ms.\n"
    );
    for m in measured {
        let _ = writeln!(
            s,
            "- {}: under load, median {} and max {}; idle, median {}.",
            m.build.label,
            meets(median(&m.loaded.to_new) <= LOADED_MEDIAN),
            meets(max(&m.loaded.to_new) <= LOADED_MAX),
            meets(median(&m.idle.to_new) <= IDLE_MEDIAN),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- Load: oha {}, HTTP/1.1 keep-alive, 32 connections, {rate} req/s for every build (half \
         of what an unthrottled burst did against the {}), `--latency-correction`; one restart \
         every {} s. Idle: one restart after the other, each once the old pid has exited.",
        oha::VERSION,
        measured.first().map_or("first build", |m| m.build.label),
        INTERVAL.as_secs()
    );
    if measured.len() > 1 {
        let _ = writeln!(
            s,
            "- Each series ran in two halves, the builds in the order {}, so that the \
             machine's drift during the run weighs on each alike.",
            measured
                .iter()
                .chain(measured.iter().rev())
                .map(|m| m.build.tag)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        s,
        "- The old pid exits once it has drained: under load its keep-alive connections close at \
         their next request (answered with `Connection: close`)."
    );
    let _ = writeln!(
        s,
        "- Command: `cargo xtask bench restart` (`--restarts N`). It builds the static one with \
         `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target HOST` \
         (`--target`, so that build scripts and proc-macros stay dynamic)."
    );
    s.push_str(&markdown::machine_and_date(
        machine,
        date,
        "; client and server share it",
    ));
    let _ = writeln!(s, "{END}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(to_new: &[f64], cold: &[f64]) -> Series {
        Series {
            to_new: to_new.to_vec(),
            to_exit: to_new.iter().map(|t| t + 1.0).collect(),
            cold: cold.to_vec(),
            pairs: to_new.iter().copied().zip(cold.iter().copied()).collect(),
        }
    }

    #[test]
    fn the_section_judges_each_build_by_its_own_figures() {
        let machine = Machine {
            nproc: 2,
            cpu: "test cpu".into(),
            kernel: "test kernel".into(),
        };
        let (a, b) = (Path::new("a"), Path::new("b"));
        let builds = [
            Build {
                tag: "dynamic",
                label: "default build",
                binary: a,
            },
            Build {
                tag: "static",
                label: "static build",
                binary: b,
            },
        ];
        let measured = [
            Measured {
                build: &builds[0],
                idle: series(&[3.2, 3.4, 3.3], &[2.6, 2.6, 2.6]),
                loaded: series(&[6.0, 16.0, 6.5], &[5.0, 5.0, 5.0]),
            },
            Measured {
                build: &builds[1],
                idle: series(&[2.8, 2.9, 3.0], &[2.0, 2.0, 2.0]),
                loaded: series(&[4.5, 5.0, 14.0], &[4.0, 4.0, 4.0]),
            },
        ];
        let s = section(&measured, 3, 40_000, &machine, "2026-01-01");
        assert!(s.starts_with(BEGIN) && s.trim_end().ends_with(END), "{s}");
        assert!(
            s.contains(
                "- default build: under load, median misses and max misses; idle, median misses."
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "- static build: under load, median meets and max meets; idle, median meets."
            ),
            "{s}"
        );
        assert!(
            s.contains("| static build | idle | 2.9 ms | 3.0 ms | 3.9 ms | 4.0 ms |"),
            "{s}"
        );
        assert!(
            s.contains("| default build | baseline: cold start, under keep-alive load | 5.0 ms | 5.0 ms | | |"),
            "{s}"
        );
        assert!(
            s.contains(
                "40000 req/s for every build (half of what an unthrottled burst did against \
                 the default build)"
            ),
            "{s}"
        );
        assert!(
            s.contains("in the order dynamic, static, static, dynamic"),
            "{s}"
        );
    }
}
