//! gracedemo under test: starting it (directly, through a symlink, or under
//! systemd-socket-activate), restarting it while probing for the new pid, and stopping it with
//! everything it started accounted for.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::group::ServerGroup;
use super::http;
use super::load::Kind;
use super::proc::{self, ExitWatch};
use super::report::{Outcomes, RestartRecord, ScenarioResult};
use super::verdict::{exited_cleanly, fd_growth, rss_growth};

/// How long one probe request may take before it counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between probes while waiting for the new pid (the resolution of the restart
/// latency; `cargo xtask bench` probes more often).
const PROBE_FAST: Duration = Duration::from_micros(500);
/// The pause between probes for the rest of the restart window.
const PROBE_SLOW: Duration = Duration::from_millis(2);

/// How the first process is started.
#[derive(Debug, Clone)]
pub(crate) enum Launch {
    /// The built binary itself.
    Direct,
    /// Through this path (a symlink the scenario swaps to another binary).
    Via(PathBuf),
    /// Under `systemd-socket-activate`, which binds every port and names the sockets.
    SocketActivation,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) tls: bool,
    pub(crate) launch: Launch,
    pub(crate) stop_timeout: Duration,
    pub(crate) kill_timeout: Duration,
    pub(crate) ready_timeout: Duration,
}

impl Config {
    pub(crate) fn new() -> Config {
        Config {
            tls: false,
            launch: Launch::Direct,
            stop_timeout: Duration::from_secs(10),
            kill_timeout: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(5),
        }
    }
}

/// The binary and files a server needs.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    pub(crate) binary: PathBuf,
    /// Certificate chain and key, for TLS.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// Where logs and the pid file go.
    pub(crate) dir: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) http: [u16; 2],
    pub(crate) https: Option<u16>,
    pub(crate) admin: u16,
}

/// Free loopback ports, all distinct. They are free when picked; the server binds them a moment
/// later (a race other programs rarely win on a test machine).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("picking free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<u16>>>()
        .context("reading a picked port")
}

/// A running gracedemo and what was seen of its restarts.
#[derive(Debug)]
pub(crate) struct Demo {
    pub(crate) group: ServerGroup,
    pub(crate) ports: Ports,
    pub(crate) config: Config,
    current: Arc<AtomicU32>,
    pid_file: PathBuf,
    log: PathBuf,
    /// Restarts whose old pid may still be draining: (index, signal time, watch).
    pending: Vec<(usize, Instant, ExitWatch)>,
    pub(crate) restarts: Vec<RestartRecord>,
    /// The restart whose new generation is still to be checked (generation, pid file).
    unsettled: Option<usize>,
    /// A measurement of the serving generation taken ahead of its restart: pid, fds, RSS.
    snap: Option<(u32, Option<proc::Fds>, Option<u64>)>,
    /// When each restart's first signal was sent.
    pub(crate) signal_times: Vec<Instant>,
    /// The probes' requests.
    pub(crate) probes: Outcomes,
    pub(crate) failures: Vec<String>,
    /// The pause between probes while waiting for the new pid.
    pub(crate) probe_pause: Duration,
}

impl Demo {
    /// Starts gracedemo and waits until it answers.
    pub(crate) fn start(files: &Files, name: &str, config: Config) -> Result<Demo> {
        let picked = free_ports(4)?;
        let ports = Ports {
            http: [picked[0], picked[1]],
            https: config.tls.then_some(picked[2]),
            admin: picked[3],
        };
        let pid_file = files.dir.join(format!("{name}.pid"));
        let log = files.dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&pid_file);
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let mut args: Vec<String> = vec![
            "--http".into(),
            addr(ports.http[0]),
            "--http".into(),
            addr(ports.http[1]),
            "--admin".into(),
            addr(ports.admin),
            "--pid-file".into(),
            pid_file.to_string_lossy().into_owned(),
            "--stop-timeout".into(),
            format!("{}ms", config.stop_timeout.as_millis()),
            "--kill-timeout".into(),
            format!("{}ms", config.kill_timeout.as_millis()),
            "--ready-timeout".into(),
            format!("{}ms", config.ready_timeout.as_millis()),
        ];
        if let Some(port) = ports.https {
            let (cert, key) = files
                .tls
                .as_ref()
                .context("TLS asked for without certificates")?;
            args.extend([
                "--https".into(),
                addr(port),
                "--cert".into(),
                cert.to_string_lossy().into_owned(),
                "--key".into(),
                key.to_string_lossy().into_owned(),
            ]);
        }
        let command = match &config.launch {
            Launch::Direct => {
                let mut c = Command::new(&files.binary);
                c.args(&args);
                c
            }
            Launch::Via(path) => {
                let mut c = Command::new(path);
                c.args(&args);
                c
            }
            Launch::SocketActivation => {
                // One `-l` per socket, named as gracedemo names its servers, so that matching
                // by name works (and by address too, as a fallback).
                let mut sockets = vec![
                    (ports.http[0], "http-0"),
                    (ports.http[1], "http-1"),
                    (ports.admin, "admin"),
                ];
                if let Some(port) = ports.https {
                    sockets.push((port, "https-0"));
                }
                let mut c = Command::new("systemd-socket-activate");
                for (port, _) in &sockets {
                    c.arg("-l").arg(addr(*port));
                }
                let names: Vec<&str> = sockets.iter().map(|(_, n)| *n).collect();
                c.arg(format!("--fdname={}", names.join(":")));
                c.arg(&files.binary).args(&args);
                c
            }
        };
        let group = ServerGroup::spawn(command, &files.binary, &log)?;
        let demo = Demo {
            group,
            ports,
            config,
            current: Arc::new(AtomicU32::new(0)),
            pid_file,
            log,
            pending: Vec::new(),
            restarts: Vec::new(),
            signal_times: Vec::new(),
            unsettled: None,
            snap: None,
            probes: Outcomes::default(),
            failures: Vec::new(),
            probe_pause: PROBE_FAST,
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            proc::check_interrupted()?;
            if let Ok(res) = http::get(demo.http_addr(1), "/pid", Duration::from_secs(2)) {
                if let Some(pid) = res.pid() {
                    demo.current.store(pid, Ordering::SeqCst);
                    break;
                }
            }
            demo.group.rescan();
            if demo.group.members().is_empty() || Instant::now() >= end {
                bail!(
                    "gracedemo did not start answering on {}; its log:\n{}",
                    demo.http_addr(1),
                    demo.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(demo)
    }

    pub(crate) fn http_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.http[i]))
    }

    pub(crate) fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.admin))
    }

    /// The URL oha loads: `/` on the first HTTP port, or on the HTTPS port for TLS.
    pub(crate) fn url(&self, kind: Kind) -> Result<String> {
        if kind.tls {
            let port = self
                .ports
                .https
                .context("TLS load on a server without TLS")?;
            // The certificate names 127.0.0.1; oha checks it against the throwaway CA.
            Ok(format!("https://127.0.0.1:{port}/"))
        } else {
            Ok(format!("http://127.0.0.1:{}/", self.ports.http[0]))
        }
    }

    /// The pid that serves now (as far as the harness knows: the last one seen answering).
    pub(crate) fn current(&self) -> u32 {
        self.current.load(Ordering::SeqCst)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The admin port's `/metrics`, as `name{labels}` -> value.
    pub(crate) fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        let res = http::get(self.admin_addr(), "/metrics", Duration::from_secs(2))
            .map_err(|e| anyhow::anyhow!("GET /metrics: {e}"))?;
        Ok(parse_metrics(&res.body))
    }

    /// The metrics of `pid` (the admin port is shared by the generations alive; ask until
    /// `pid` answers, for at most a second).
    pub(crate) fn metrics_of(&self, pid: u32) -> Option<BTreeMap<String, f64>> {
        for _ in 0..100 {
            if let Ok(m) = self.metrics() {
                if m.get("gracehttp_process_id").copied() == Some(f64::from(pid)) {
                    return Some(m);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Measures the old generation, sends `signals` SIGUSR2 to it, probes until the new pid
    /// answers, then goes on probing for the rest of `window` or until the old pid exits.
    ///
    /// The new generation's number and the pid file are checked after the window, or with a
    /// zero window at the next [`settle`](Demo::settle) (so that a caller timing things right
    /// after the new pid answers is not delayed).
    pub(crate) fn restart(&mut self, signals: u32, window: Duration) -> Result<()> {
        self.settle();
        let old = self.current();
        let mut rec = RestartRecord {
            old_pid: old,
            signals,
            ..RestartRecord::default()
        };
        let (fds, rss) = match self.snap.take() {
            Some((pid, fds, rss)) if pid == old => (fds, rss),
            _ => (proc::fds(old), proc::rss_kib(old)),
        };
        if let Some(fds) = fds {
            rec.fds = Some(fds.total);
            rec.fds_base = Some(fds.base());
        }
        rec.rss_kib = rss;
        let probes_before = self.probes.total();
        let watch = ExitWatch::start(old, self.drain_limit() + Duration::from_secs(5));
        let t0 = Instant::now();
        for k in 0..signals {
            if k > 0 {
                // Signals sent back to back merge into one pending signal; a millisecond apart,
                // each is delivered, while the upgrade (a few ms) is still in progress.
                std::thread::sleep(Duration::from_millis(1));
            }
            if let Err(e) = proc::signal(old, libc::SIGUSR2) {
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
            self.current.store(pid, Ordering::SeqCst);
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
            proc::check_interrupted()?;
            let (_, slow) = self.probe_once()?;
            probe_max = probe_max.max(slow);
            std::thread::sleep(PROBE_SLOW);
        }
        rec.probe_max = Some(probe_max);
        rec.probes = self.probes.total() - probes_before;
        self.pending.push((self.restarts.len(), t0, watch));
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
        let pid = self.current();
        self.snap = Some((pid, proc::fds(pid), proc::rss_kib(pid)));
    }

    /// How long a draining generation may live: stop timeout, then kill timeout.
    pub(crate) fn drain_limit(&self) -> Duration {
        self.config.stop_timeout + self.config.kill_timeout
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
            proc::check_interrupted()?;
            let (pid, took) = self.probe_once()?;
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
    fn probe_once(&mut self) -> Result<(Option<u32>, Duration)> {
        let started = Instant::now();
        let res = http::get(self.http_addr(1), "/pid", PROBE_TIMEOUT);
        let took = started.elapsed();
        match res {
            Ok(r) if r.status == 200 && r.pid().is_some() => {
                self.probes.ok += 1;
                Ok((r.pid(), took))
            }
            Ok(r) => {
                self.probes.non2xx += 1;
                self.failures.push(format!(
                    "probe: GET /pid answered {} {:?}",
                    r.status, r.body
                ));
                Ok((None, took))
            }
            Err(e) => {
                *self.probes.bucket(e.fail.name()) += 1;
                if self.failures.len() < 50 {
                    self.failures.push(format!("probe: GET /pid failed: {e}"));
                }
                Ok((None, took))
            }
        }
    }

    fn check_pid_file(&mut self, pid: u32) {
        let mut last = String::new();
        for _ in 0..50 {
            last = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
            if last.trim() == pid.to_string() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.failures.push(format!(
            "the pid file {} says {:?}, not the new pid {pid}",
            self.pid_file.display(),
            last.trim()
        ));
    }

    /// Records the exits of old generations that have happened (or, with `wait`, waits for
    /// each within its limit).
    pub(crate) fn collect_exits(&mut self, wait: bool) {
        let pending = std::mem::take(&mut self.pending);
        for (i, t0, watch) in pending {
            if !wait && !watch.is_finished() {
                self.pending.push((i, t0, watch));
                continue;
            }
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

    /// Stops the server with SIGTERM to the current pid and waits for every process of the
    /// group to be gone (SIGKILL after stop + kill timeout + 2 s). Returns how long the
    /// current pid took to exit.
    pub(crate) fn stop(&mut self) -> Result<Option<Duration>> {
        self.settle();
        self.collect_exits(true);
        let pid = self.current();
        let watch = ExitWatch::start(pid, self.drain_limit() + Duration::from_secs(2));
        let t0 = Instant::now();
        if let Err(e) = proc::signal(pid, libc::SIGTERM) {
            self.failures.push(format!("SIGTERM to {pid}: {e}"));
        }
        let exited = watch.wait().map(|at| at.saturating_duration_since(t0));
        if !self.group.wait_empty(Duration::from_secs(2)) {
            let left = self.group.kill_all();
            self.failures.push(format!(
                "still running after SIGTERM and {:?}, killed: {left:?}",
                self.drain_limit() + Duration::from_secs(2)
            ));
        }
        proc::check_interrupted()?;
        Ok(exited)
    }

    /// Adds what every scenario checks to `result`: the restarts and their verdicts (live
    /// generations, descriptor and memory growth, zombies), how each generation exited, the
    /// probes, and the log. Call after [`stop`](Demo::stop).
    pub(crate) fn finish(&mut self, result: &mut ScenarioResult) {
        self.collect_exits(true);
        // The scan samples every few ms and can miss a short overlap; the timings cannot: a
        // generation that exits after its successor's successor answered overlapped with both.
        let times = self.signal_times.clone();
        for i in 1..self.restarts.len() {
            let (prev, next) = (&self.restarts[i - 1], &self.restarts[i]);
            let prev_exit = prev.to_old_exit.zip(times.get(i - 1)).map(|(d, t)| *t + d);
            let next_new = next.to_new.zip(times.get(i)).map(|(d, t)| *t + d);
            if let (Some(exit), Some(answered)) = (prev_exit, next_new) {
                if exit > answered {
                    self.restarts[i].generations = self.restarts[i].generations.max(3);
                }
            }
        }
        result.max_generations = self.group.max_live().max(
            self.restarts
                .iter()
                .map(|r| r.generations)
                .max()
                .unwrap_or(0),
        );
        result.zombies = self.group.zombies();
        result.restarts = std::mem::take(&mut self.restarts);
        result.clients.add(&self.probes);
        result.failures.append(&mut self.failures);
        if result.max_generations > 2 {
            result.fail(format!(
                "{} server generations were alive at once (at most 2 allowed)",
                result.max_generations
            ));
        }
        if !result.zombies.is_empty() {
            result.fail(format!(
                "zombies left unreaped by a server for over a second: {:?}",
                result.zombies
            ));
        }
        if let Some(why) = fd_growth(&result.restarts) {
            result.fail(why);
        }
        if let Some(why) = rss_growth(&result.restarts) {
            result.fail(why);
        }
        let killed = self.group.killed_by_harness();
        for (pid, status, _) in self.group.exits() {
            if !exited_cleanly(status, killed) {
                result.fail(format!("server process {pid} exited with {status}"));
            }
        }
        result.log = Some(self.log.to_string_lossy().into_owned());
        let log = self.log_text();
        let panics: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("panicked"))
            .take(3)
            .collect();
        if !panics.is_empty() {
            result.fail(format!("the server panicked: {}", panics.join(" | ")));
        }
    }
}

/// Prometheus text lines `name{labels} value` into a map.
pub(crate) fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics() {
        let m = parse_metrics("# HELP x y\nx{a=\"b c\"} 3\ngracehttp_generation 2\nbad\n");
        assert_eq!(m.get("x{a=\"b c\"}"), Some(&3.0));
        assert_eq!(m.get("gracehttp_generation"), Some(&2.0));
        assert_eq!(m.len(), 2);
    }
}
