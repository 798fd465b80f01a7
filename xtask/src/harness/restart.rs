//! Restarting gracedemo: SIGUSR2 to the serving pid, probes (a new connection every few ms)
//! until a new pid answers and through the old pid's drain, and one record per restart of
//! what that looked like from outside.

use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::signal::Signal;
use serde::{Serialize, Serializer};
use testkit::fs::read_pid;
use testkit::wait_until;

use super::demo::Demo;
use super::exit_watch::ExitWatch;
use super::procfs::{self, Fds};
use super::{http, interrupt, process};

/// How long one probe request may take before it counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between probes while waiting for the new pid (the resolution of the restart
/// latency; `cargo xtask bench` probes more often).
pub(super) const PROBE_FAST: Duration = Duration::from_micros(500);
/// The pause between probes for the rest of the restart window.
const PROBE_SLOW: Duration = Duration::from_millis(2);

/// One restart, as seen from outside.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RestartRecord {
    pub(crate) old_pid: u32,
    pub(crate) new_pid: Option<u32>,
    /// The new process's `gracehttp_generation`.
    pub(crate) generation: Option<u64>,
    /// Signals sent in this restart (more than one: `double-signal`).
    pub(crate) signals: u32,
    /// From the signal to the first answer from the new pid.
    #[serde(rename = "to_new_pid_ms", serialize_with = "as_ms")]
    pub(crate) to_new: Option<Duration>,
    /// From the signal to the old pid's exit.
    #[serde(rename = "to_old_exit_ms", serialize_with = "as_ms")]
    pub(crate) to_old_exit: Option<Duration>,
    /// The most server processes alive at once from this signal to the next.
    #[serde(rename = "live_generations_max")]
    pub(crate) generations: usize,
    /// Descriptors of the old generation just before its signal: all, and without TCP
    /// connections ("base").
    #[serde(rename = "old_fds")]
    pub(crate) fds: Option<usize>,
    #[serde(rename = "old_fds_without_connections")]
    pub(crate) fds_base: Option<usize>,
    /// Its resident memory then, KiB.
    #[serde(rename = "old_rss_kib")]
    pub(crate) rss_kib: Option<u64>,
    /// Zombie children of a server seen by then.
    pub(crate) zombies: usize,
    /// The slowest probe request inside the restart window.
    #[serde(rename = "probe_max_ms", serialize_with = "as_ms")]
    pub(crate) probe_max: Option<Duration>,
    pub(crate) probes: u64,
}

/// A duration in milliseconds, as the reports give times.
pub(crate) fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

fn as_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    ms(*d).serialize(s)
}

/// A restart whose old pid may still be draining.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Its index among the records.
    restart: usize,
    /// When its first signal was sent.
    signalled: Instant,
    watch: ExitWatch,
}

/// What a generation held just before its restart: descriptors and resident memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pid: u32,
    fds: Option<Fds>,
    rss_kib: Option<u64>,
}

impl Snapshot {
    fn of(pid: u32) -> Snapshot {
        Snapshot {
            pid,
            fds: procfs::fds(pid),
            rss_kib: procfs::rss_kib(pid),
        }
    }
}

impl Demo {
    /// Measures the old generation, sends `signals` SIGUSR2 to it, probes until the new pid
    /// answers, then goes on probing for the rest of `window` or until the old pid exits.
    ///
    /// The new generation's number and the pid file are checked after the window, or with a
    /// zero window at the next [`settle`](Demo::settle) (so that a caller timing things right
    /// after the new pid answers is not delayed).
    pub(crate) fn restart(&mut self, signals: u32, window: Duration) -> Result<()> {
        self.settle();
        let old = self.current;
        let mut rec = RestartRecord {
            old_pid: old,
            signals,
            ..RestartRecord::default()
        };
        let snap = match self.snap.take() {
            Some(snap) if snap.pid == old => snap,
            _ => Snapshot::of(old),
        };
        if let Some(fds) = snap.fds {
            rec.fds = Some(fds.total);
            rec.fds_base = Some(fds.base());
        }
        rec.rss_kib = snap.rss_kib;
        let probes_before = self.probes.total();
        let watch = ExitWatch::start(old, self.drain_limit() + Duration::from_secs(5));
        let t0 = Instant::now();
        for k in 0..signals {
            if k > 0 {
                // Signals sent back to back merge into one pending signal; a millisecond apart,
                // each is delivered, while the upgrade (a few ms) is still in progress.
                std::thread::sleep(Duration::from_millis(1));
            }
            if let Err(e) = process::signal(old, Signal::SIGUSR2) {
                // The server is gone (it crashed, or was killed): a failure to report with
                // whatever the load saw, not a reason to stop measuring.
                let why = format!("SIGUSR2 to {old}: {e} (the serving process is gone)");
                if !self.failures.contains(&why) {
                    self.failures.push(why);
                }
                return Ok(());
            }
        }
        self.signal_times.push(t0);
        let (answer, probe) = self.probe_until(
            t0,
            self.config.ready_timeout + Duration::from_secs(2),
            |pid| pid != old,
        )?;
        let mut probe_max = probe;
        if let Some((pid, at)) = answer {
            rec.new_pid = Some(pid);
            rec.to_new = Some(at - t0);
            self.current = pid;
            // Both generations are usually alive now: let the count see them.
            self.group.rescan();
        } else {
            self.failures.push(format!(
                "restart {}: no answer from a new pid within {:?} of SIGUSR2 to {old}",
                self.restarts.len() + 1,
                self.config.ready_timeout + Duration::from_secs(2)
            ));
        }
        // The rest of the window: latency as a client sees it while the old pid drains.
        let end = t0 + window;
        while Instant::now() < end && !watch.is_finished() {
            interrupt::check()?;
            let (_, slow) = self.probe_once();
            probe_max = probe_max.max(slow);
            std::thread::sleep(PROBE_SLOW);
        }
        rec.probe_max = Some(probe_max);
        rec.probes = self.probes.total() - probes_before;
        self.pending.push(Pending {
            restart: self.restarts.len(),
            signalled: t0,
            watch,
        });
        self.unsettled = Some(self.restarts.len());
        self.restarts.push(rec);
        if !window.is_zero() {
            self.settle();
        }
        self.collect_exits(false);
        Ok(())
    }

    /// Checks the last restart's new generation: its `gracehttp_generation`, and that the pid
    /// file names it.
    pub(crate) fn settle(&mut self) {
        let Some(i) = self.unsettled.take() else {
            return;
        };
        let Some(new) = self.restarts.get(i).and_then(|r| r.new_pid) else {
            return;
        };
        let generation = self
            .metrics_of(new)
            .and_then(|m| m.get("gracehttp_generation").map(|g| *g as u64));
        if let Some(rec) = self.restarts.get_mut(i) {
            rec.generation = generation;
        }
        self.check_pid_file(new);
    }

    /// Measures the serving generation now (descriptors, memory) for its restart's record, so
    /// that the restart itself follows without delay.
    pub(crate) fn snapshot(&mut self) {
        self.snap = Some(Snapshot::of(self.current));
    }

    /// Probes (a new connection each, `GET /pid` on the second HTTP port) until a pid for
    /// which `wanted` holds answers, for at most `limit`. Returns that pid and when, and the
    /// slowest probe.
    pub(crate) fn probe_until(
        &mut self,
        t0: Instant,
        limit: Duration,
        wanted: impl Fn(u32) -> bool,
    ) -> Result<(Option<(u32, Instant)>, Duration)> {
        let mut slowest = Duration::ZERO;
        let end = t0 + limit;
        while Instant::now() < end {
            interrupt::check()?;
            let (pid, took) = self.probe_once();
            slowest = slowest.max(took);
            if let Some(pid) = pid.filter(|&p| wanted(p)) {
                return Ok((Some((pid, Instant::now())), slowest));
            }
            std::thread::sleep(self.probe_pause);
        }
        Ok((None, slowest))
    }

    /// One probe: the pid that answered (or `None` on a failure, which is counted), and how
    /// long it took.
    pub(super) fn probe_once(&mut self) -> (Option<u32>, Duration) {
        let started = Instant::now();
        let res = http::get(self.ports.http[1], "/pid", PROBE_TIMEOUT);
        let took = started.elapsed();
        let pid = match res {
            Ok(r) if r.status == 200 && http::pid(&r).is_some() => {
                self.probes.ok += 1;
                http::pid(&r)
            }
            Ok(r) => {
                self.probes.non2xx += 1;
                self.failures.push(format!(
                    "probe: GET /pid answered {} {:?}",
                    r.status,
                    r.text()
                ));
                None
            }
            Err(e) => {
                *self.probes.bucket(e.fail.name()) += 1;
                if self.failures.len() < 50 {
                    self.failures.push(format!("probe: GET /pid failed: {e}"));
                }
                None
            }
        };
        (pid, took)
    }

    /// Checks (for at most half a second, while the new generation writes it) that the pid
    /// file names `pid`.
    fn check_pid_file(&mut self, pid: u32) {
        let named = || (read_pid(&self.pid_file) == Some(pid)).then_some(());
        if wait_until(Duration::from_millis(500), named).is_none() {
            let last = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
            self.failures.push(format!(
                "the pid file {} says {:?}, not the new pid {pid}",
                self.pid_file.display(),
                last.trim()
            ));
        }
    }

    /// Records the exits of old generations that have happened (or, with `wait`, waits for
    /// each within its limit).
    pub(crate) fn collect_exits(&mut self, wait: bool) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if !wait && !p.watch.is_finished() {
                self.pending.push(p);
                continue;
            }
            let Pending {
                restart: i,
                signalled: t0,
                watch,
            } = p;
            let exited = watch.wait();
            let limit = self.drain_limit() + Duration::from_secs(5);
            if let Some(rec) = self.restarts.get_mut(i) {
                rec.to_old_exit = exited.map(|at| at.saturating_duration_since(t0));
                rec.generations = self.group.max_live_since(t0);
                rec.zombies = self.group.zombies().len();
                if exited.is_none() {
                    self.failures.push(format!(
                        "restart {}: the old pid {} did not exit within {limit:?}",
                        i + 1,
                        rec.old_pid,
                    ));
                }
            }
        }
    }
}
