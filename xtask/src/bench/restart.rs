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
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Ctx, markdown, max, median, min};
use crate::harness::load::{self, Kind, Load};
use crate::harness::machine::Machine;
use crate::harness::restart::{RestartRecord, ms};
use crate::harness::{http, interrupt, oha};

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

/// Restarts in ms: to the new pid (every restart has one), to the old pid's exit, and the cold
/// start after each restart (`to_new[i]` pairs with `cold[i]`).
#[derive(Default)]
struct Series {
    to_new: Vec<f64>,
    to_exit: Vec<f64>,
    cold: Vec<f64>,
}

impl Series {
    /// Each restart's time to the new pid against the cold start after it.
    fn ratios(&self) -> Vec<f64> {
        self.to_new
            .iter()
            .zip(&self.cold)
            .map(|(r, c)| r / c)
            .collect()
    }

    fn append(&mut self, records: &[RestartRecord], cold: Vec<f64>) {
        self.to_new
            .extend(records.iter().filter_map(|r| ms(r.to_new)));
        self.to_exit
            .extend(records.iter().filter_map(|r| ms(r.to_old_exit)));
        self.cold.extend(cold);
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
    let addrs = testkit::net::free_addrs(3).context("picking free loopback ports")?;
    let pid_file = ctx.dir.join("bench-cold.pid");
    let log = File::create(ctx.dir.join("bench-cold.log")).context("creating bench-cold.log")?;
    let mut command = Command::new(binary);
    let [http0, http1, admin] = [0, 1, 2].map(|i| addrs[i].to_string());
    command
        .args([
            "--http",
            &http0,
            "--http",
            &http1,
            "--admin",
            &admin,
            "--pid-file",
        ])
        .arg(&pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let target = addrs[0];
    let t0 = Instant::now();
    let child = Cold(command.spawn().context("starting gracedemo")?);
    let end = t0 + Duration::from_secs(10);
    while Instant::now() < end {
        interrupt::check()?;
        if let Ok(r) = http::get(target, "/pid", Duration::from_secs(1)) {
            if http::pid(&r) != Some(child.0.id()) {
                bail!(
                    "cold start {i}: {target} answered {:?}, not gracedemo",
                    http::pid(&r)
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
    let url = format!("http://{}/", demo.ports.http[0]);
    let capacity = load::capacity(&ctx.oha, Kind::KEEPALIVE, &url, None, &ctx.dir, 2.0)?;
    demo.stop()?;
    Ok((capacity / 2.0) as u64)
}

/// `n` restarts of `build`, idle or (with a rate) under keep-alive load at that rate, each with
/// the cold start after it.
fn restarts(
    ctx: &Ctx,
    build: &Build<'_>,
    n: usize,
    rate: Option<u64>,
    part: usize,
) -> Result<(Vec<RestartRecord>, Vec<f64>)> {
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
        let url = format!("http://{}/", demo.ports.http[0]);
        let planned = INTERVAL * u32::try_from(n + 1).unwrap_or(u32::MAX);
        let l = Load {
            kind: Kind::KEEPALIVE,
            url,
            rate: Some(r),
            requests: (r as f64 * planned.as_secs_f64()) as u64,
            ca: None,
        };
        let tag = format!("{name}-oha");
        running = Some(load::start(&ctx.oha, &l, &ctx.dir, &tag)?);
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
    Ok((records, cold))
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
            let (records, cold) = restarts(ctx, &builds[b], count, load, part)?;
            series[b].append(&records, cold);
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

/// Each build's series: idle, then under load.
fn each<'a>(m: &'a Measured<'_>) -> [(&'static str, &'a Series); 2] {
    [("idle", &m.idle), ("under keep-alive load", &m.loaded)]
}

/// The latency table: each build idle and loaded, then its cold-start baselines.
fn table(s: &mut String, measured: &[Measured<'_>]) {
    s.push_str(
        "| build | | to new pid, median | to new pid, max | to old exit, median | to old exit, \
         max |\n|---|---|---:|---:|---:|---:|\n",
    );
    for m in measured {
        for (name, x) in each(m) {
            let (new, exit) = (&x.to_new, &x.to_exit);
            let _ = writeln!(
                s,
                "| {} | {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                m.build.label,
                median(new),
                max(new),
                median(exit),
                max(exit)
            );
        }
        for (name, x) in each(m) {
            let (med, most) = (median(&x.cold), max(&x.cold));
            let label = m.build.label;
            let _ = writeln!(
                s,
                "| {label} | baseline: cold start, {name} | {med:.1} ms | {most:.1} ms | | |"
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
    let mut s = format!(
        "{BEGIN}\n## Restart latency\n\nFrom `SIGUSR2` to the first answer from the new pid, and \
         to the old pid's exit, over {n} restarts of `gracedemo` each way. The new pid is found by \
         a probe: `GET /pid` on a new connection every {} µs from the signal on.\n\n",
        PROBE_PAUSE.as_micros()
    );
    if measured.len() > 1 {
        s.push_str(
            "Two builds of the same code: the one `cargo build --release` makes, dynamically \
             linked against glibc, and a statically linked one (glibc static-pie). A restart is \
             mostly the new binary's start-up, and static linking removes the dynamic loader's \
             part of it (mapping and relocating three shared libraries) from every start, cold \
             or by restart. (Go programs built with `CGO_ENABLED=0`, as Go servers often are, \
             are statically linked as well.)\n\n",
        );
    }
    table(&mut s, measured);
    s.push_str(
        "\nThe baseline is the same binary with the same flags started from scratch, timed from \
         the spawn to its first answer on a new connection (probed the same way), once after \
         each restart: the process start-up (exec, dynamic loading, runtime threads) that any \
         exec-based restart pays too. A restart adds the signal's delivery and the parent's \
         preparation, and skips the binds and the pid file. Restart against the cold start \
         after it (to new pid / cold start, each pair):\n\n",
    );
    for m in measured {
        for (name, x) in each(m) {
            let r = x.ratios();
            let _ = writeln!(
                s,
                "- {}, {name}: median {:.2}, spread {:.2}..{:.2} over {} pairs",
                m.build.label,
                median(&r),
                min(&r),
                max(&r),
                r.len()
            );
        }
    }
    let _ = writeln!(
        s,
        "\nTargets: under load, median at most {LOADED_MEDIAN} ms and max at most {LOADED_MAX} \
         ms; idle, median at most {IDLE_MEDIAN} ms.\n"
    );
    for m in measured {
        let (loaded, idle) = (&m.loaded.to_new, &m.idle.to_new);
        let _ = writeln!(
            s,
            "- {}: under load, median {} and max {}; idle, median {}.",
            m.build.label,
            meets(median(loaded) <= LOADED_MEDIAN),
            meets(max(loaded) <= LOADED_MAX),
            meets(median(idle) <= IDLE_MEDIAN),
        );
    }
    let _ = writeln!(
        s,
        "\n- Load: oha {}, HTTP/1.1 keep-alive, 32 connections, {rate} req/s for every build \
         (half of what an unthrottled burst did against the {}), `--latency-correction`; one \
         restart every {} s. Idle: one restart after the other, each once the old pid has exited.",
        oha::VERSION,
        measured.first().map_or("first build", |m| m.build.label),
        INTERVAL.as_secs()
    );
    if measured.len() > 1 {
        let order: Vec<&str> = measured
            .iter()
            .chain(measured.iter().rev())
            .map(|m| m.build.tag)
            .collect();
        let _ = writeln!(
            s,
            "- Each series ran in two halves, the builds in the order {}, so that the machine's \
             drift during the run weighs on each alike.",
            order.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "- The old pid exits once it has drained: under load its keep-alive connections close at \
         their next request (answered with `Connection: close`).\n- Command: `cargo xtask bench \
         restart` (`--restarts N`). It builds the static one with `RUSTFLAGS=\"-C \
         target-feature=+crt-static\" cargo build --release --target HOST` (`--target`, so that \
         build scripts and proc-macros stay dynamic).\n{}{END}",
        markdown::machine_and_date(machine, date, "; client and server share it")
    );
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
        }
    }

    #[test]
    fn the_section_judges_each_build_by_its_own_figures() {
        let build = |tag, label, binary| Build { tag, label, binary };
        let builds = [
            build("dynamic", "default build", Path::new("a")),
            build("static", "static build", Path::new("b")),
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
        let s = section(&measured, 3, 40_000, &Machine::fake(), "2026-01-01");
        assert!(s.starts_with(BEGIN) && s.trim_end().ends_with(END), "{s}");
        for expected in [
            "- default build: under load, median misses and max misses; idle, median misses.",
            "- static build: under load, median meets and max meets; idle, median meets.",
            "| static build | idle | 2.9 ms | 3.0 ms | 3.9 ms | 4.0 ms |",
            "| default build | baseline: cold start, under keep-alive load | 5.0 ms | 5.0 ms | | |",
            "40000 req/s for every build (half of what an unthrottled burst did against the \
             default build)",
            "in the order dynamic, static, static, dynamic",
        ] {
            assert!(s.contains(expected), "{expected:?} is not in {s}");
        }
    }
}
