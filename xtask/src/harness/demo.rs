//! gracedemo under test: starting it (directly, through a symlink, or under
//! systemd-socket-activate) in a process group of its own, asking it for its pid and metrics,
//! and stopping it with everything it started accounted for. Restarting it is `restart.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use testkit::wait_until;

use super::exit_watch::ExitWatch;
use super::group::ServerGroup;
use super::load::Kind;
use super::outcomes::Outcomes;
use super::restart::{PROBE_FAST, Pending, RestartRecord, Snapshot};
use super::{http, interrupt, process};

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

impl Default for Config {
    fn default() -> Config {
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

/// The server's loopback addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) http: [SocketAddr; 2],
    pub(crate) https: Option<SocketAddr>,
    pub(crate) admin: SocketAddr,
}

/// A running gracedemo and what was seen of its restarts.
#[derive(Debug)]
pub(crate) struct Demo {
    pub(crate) group: ServerGroup,
    pub(crate) ports: Ports,
    pub(crate) config: Config,
    /// The pid that serves now, as far as the harness knows: the last one seen answering.
    pub(crate) current: u32,
    pub(super) pid_file: PathBuf,
    /// Its stderr, every generation's.
    pub(crate) log: PathBuf,
    /// Restarts whose old pid may still be draining.
    pub(super) pending: Vec<Pending>,
    pub(crate) restarts: Vec<RestartRecord>,
    /// The restart whose new generation is still to be checked (generation, pid file).
    pub(super) unsettled: Option<usize>,
    /// A measurement of the serving generation taken ahead of its restart.
    pub(super) snap: Option<Snapshot>,
    /// When each restart's first signal was sent.
    pub(crate) signal_times: Vec<Instant>,
    /// The probes' requests.
    pub(crate) probes: Outcomes,
    pub(crate) failures: Vec<String>,
    /// The pause between probes while waiting for the new pid.
    pub(crate) probe_pause: Duration,
}

/// gracedemo's flags for `ports`, `config` and its pid file.
fn args(files: &Files, ports: &Ports, config: &Config, pid_file: &Path) -> Result<Vec<String>> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut args: Vec<String> = vec![
        "--http".into(),
        ports.http[0].to_string(),
        "--http".into(),
        ports.http[1].to_string(),
        "--admin".into(),
        ports.admin.to_string(),
        "--pid-file".into(),
        pid_file.to_string_lossy().into_owned(),
        "--stop-timeout".into(),
        ms(config.stop_timeout),
        "--kill-timeout".into(),
        ms(config.kill_timeout),
        "--ready-timeout".into(),
        ms(config.ready_timeout),
    ];
    if let Some(https) = ports.https {
        let Some((cert, key)) = &files.tls else {
            bail!("TLS asked for without certificates");
        };
        args.extend([
            "--https".into(),
            https.to_string(),
            "--cert".into(),
            cert.to_string_lossy().into_owned(),
            "--key".into(),
            key.to_string_lossy().into_owned(),
        ]);
    }
    Ok(args)
}

/// The command that starts the first process, as `launch` says.
fn command(launch: &Launch, binary: &Path, ports: &Ports, args: &[String]) -> Command {
    let program = match launch {
        Launch::Direct => binary,
        Launch::Via(path) => path,
        Launch::SocketActivation => {
            // One `-l` per socket, named as gracedemo names its servers, so that matching by
            // name works (and by address too, as a fallback).
            let mut sockets = vec![
                (ports.http[0], "http-0"),
                (ports.http[1], "http-1"),
                (ports.admin, "admin"),
            ];
            sockets.extend(ports.https.map(|addr| (addr, "https-0")));
            let mut c = Command::new("systemd-socket-activate");
            for (addr, _) in &sockets {
                c.arg("-l").arg(addr.to_string());
            }
            let names: Vec<&str> = sockets.iter().map(|(_, n)| *n).collect();
            c.arg(format!("--fdname={}", names.join(":")));
            c.arg(binary).args(args);
            return c;
        }
    };
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Waits until `GET /pid` on `addr` answers with a pid, for at most `limit`; an error as soon
/// as `group` is empty (the server exited).
pub(crate) fn await_pid(group: &ServerGroup, addr: SocketAddr, limit: Duration) -> Result<u32> {
    let end = Instant::now() + limit;
    loop {
        interrupt::check()?;
        let answer = http::get(addr, "/pid", Duration::from_secs(2)).ok();
        if let Some(pid) = answer.as_ref().and_then(http::pid) {
            return Ok(pid);
        }
        group.rescan();
        if group.members().is_empty() {
            bail!("the server exited before answering on {addr}");
        }
        if Instant::now() >= end {
            bail!("the server did not answer on {addr} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Demo {
    /// Starts gracedemo and waits until it answers.
    pub(crate) fn start(files: &Files, name: &str, config: Config) -> Result<Demo> {
        let picked = testkit::net::free_addrs(4).context("picking free loopback ports")?;
        let ports = Ports {
            http: [picked[0], picked[1]],
            https: config.tls.then_some(picked[2]),
            admin: picked[3],
        };
        let pid_file = files.dir.join(format!("{name}.pid"));
        let log = files.dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&pid_file);
        let args = args(files, &ports, &config, &pid_file)?;
        let command = command(&config.launch, &files.binary, &ports, &args);
        let group = ServerGroup::spawn(command, &files.binary, &log)?;
        let mut demo = Demo {
            group,
            ports,
            config,
            current: 0,
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
        match await_pid(&demo.group, demo.ports.http[1], Duration::from_secs(20)) {
            Ok(pid) => demo.current = pid,
            Err(e) => {
                let log = demo.log_text();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!("gracedemo: {e:#}; its log:\n{}", tail.join("\n"))
            }
        }
        Ok(demo)
    }

    /// The address of `kind`'s load: the first HTTP port, or the HTTPS port for TLS.
    pub(crate) fn load_addr(&self, kind: Kind) -> Result<SocketAddr> {
        if kind.tls {
            self.ports.https.context("TLS load on a server without TLS")
        } else {
            Ok(self.ports.http[0])
        }
    }

    /// The URL oha loads: `/` at [`Demo::load_addr`]. (The certificate names 127.0.0.1; oha
    /// checks it against the throwaway CA.)
    pub(crate) fn url(&self, kind: Kind) -> Result<String> {
        let scheme = if kind.tls { "https" } else { "http" };
        Ok(format!("{scheme}://{}/", self.load_addr(kind)?))
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin port's `/metrics`, as `name{labels}` -> value.
    pub(crate) fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        let res = http::get(self.ports.admin, "/metrics", Duration::from_secs(2))
            .map_err(|e| anyhow::anyhow!("GET /metrics: {e}"))?;
        Ok(testkit::metrics::parse(&res.text()))
    }

    /// The metrics of `pid` (the admin port is shared by the generations alive; ask until
    /// `pid` answers, for at most a second).
    pub(crate) fn metrics_of(&self, pid: u32) -> Option<BTreeMap<String, f64>> {
        wait_until(Duration::from_secs(1), || {
            let m = self.metrics().ok()?;
            (m.get("gracehttp_process_id").copied() == Some(f64::from(pid))).then_some(m)
        })
    }

    /// How long a draining generation may live: stop timeout, then kill timeout.
    pub(crate) fn drain_limit(&self) -> Duration {
        self.config.stop_timeout + self.config.kill_timeout
    }

    /// Stops the server with SIGTERM to the current pid and waits for every process of the
    /// group to be gone (SIGKILL after stop + kill timeout + 2 s). Returns how long the
    /// current pid took to exit.
    pub(crate) fn stop(&mut self) -> Result<Option<Duration>> {
        self.settle();
        self.collect_exits(true);
        let pid = self.current;
        let watch = ExitWatch::start(pid, self.drain_limit() + Duration::from_secs(2));
        let t0 = Instant::now();
        if let Err(e) = process::signal(pid, Signal::SIGTERM) {
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
        interrupt::check()?;
        Ok(exited)
    }
}
