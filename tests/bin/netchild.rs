//! A test child built on gracenet alone: it takes its sockets from a parent, reports what it
//! got, says ready, and answers every connection (and datagram) with its pid.
//!
//! ```text
//! netchild [--mode serve|check|exit1|abort|hang|upgrade|close|close-early|seal-probe] [--listen [NAME=]ENDPOINT]...
//!          [--report-dir DIR] [--max-seconds N] [--child-mode MODE] [--pid-file PATH]
//!          [--probe-after-failure]
//! ```
//!
//! `close` listens, reports ready, then stops for good (`Net::close`) and exits.
//! `close-early` listens, then stops for good (`Net::close`) before it is ready, and exits 1.
//! `seal-probe` listens, reports ready, stops for good (`Net::close`) but keeps its listeners,
//! then tries to connect to each one and prints `seal ENDPOINT sealed` (the attempt went
//! unanswered or was refused) or `seal ENDPOINT open` (it was queued), and exits.
//! `upgrade` serves nothing: it listens, reports ready, upgrades once to a netchild started
//! with `--mode CHILD-MODE` and the same listeners, prints `upgraded PID` or `failed ERROR`,
//! says `STOPPING=1` to systemd and exits. With `--probe-after-failure`, a failed upgrade is
//! followed by `after ENDPOINT open|sealed` for each of its own listeners, as `seal-probe`
//! prints them.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gracenet::{Endpoint, Listener, Net};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

struct Args {
    mode: String,
    listen: Vec<(Option<String>, Endpoint)>,
    report_dir: Option<PathBuf>,
    max: Duration,
    child_mode: String,
    raw_listen: Vec<String>,
    pid_file: Option<PathBuf>,
    probe_after_failure: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        mode: "serve".into(),
        listen: Vec::new(),
        report_dir: None,
        max: Duration::from_secs(60),
        child_mode: "serve".into(),
        raw_listen: Vec::new(),
        pid_file: None,
        probe_after_failure: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => args.mode = value()?,
            "--listen" => {
                let v = value()?;
                args.raw_listen.push(v.clone());
                let (name, spec) = match v.split_once('=') {
                    Some((n, s)) => (Some(n.to_owned()), s.to_owned()),
                    None => (None, v),
                };
                args.listen.push((name, spec.parse()?));
            }
            "--report-dir" => args.report_dir = Some(value()?.into()),
            "--max-seconds" => args.max = Duration::from_secs(value()?.parse()?),
            "--child-mode" => args.child_mode = value()?,
            "--pid-file" => args.pid_file = Some(value()?.into()),
            "--probe-after-failure" => args.probe_after_failure = true,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// Whether a subprocess started now sees any of the handover protocol's variables.
fn subprocess_env_clean() -> anyhow::Result<bool> {
    let out = Command::new("env").output().context("running env")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(!text
        .lines()
        .any(|l| l.starts_with("LISTEN_") || l.starts_with("GRACENET_")))
}

/// This process's blocked and ignored signals, as the kernel shows them (hex masks).
fn signal_state() -> anyhow::Result<String> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("no {name} in /proc/self/status"))
    };
    Ok(format!(
        "signals blocked={} ignored={}",
        field("SigBlk:")?,
        field("SigIgn:")?
    ))
}

fn flags(fd: impl AsFd + Copy) -> anyhow::Result<(bool, bool)> {
    let fd_flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    let fl_flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    Ok((
        fd_flags.contains(FdFlag::FD_CLOEXEC),
        fl_flags.contains(OFlag::O_NONBLOCK),
    ))
}

/// Whether a listener this process still holds takes a new connection: `open` if one was
/// queued, `sealed` if the attempt went unanswered (TCP) or was refused (unix).
fn seal_state(l: &Listener) -> anyhow::Result<&'static str> {
    // A sealed TCP listener drops the SYN, and the client's first retry comes after a second.
    let unanswered = Duration::from_millis(500);
    Ok(match l {
        Listener::Tcp(l) => match TcpStream::connect_timeout(&l.local_addr()?, unanswered) {
            Ok(_) => "open",
            Err(e) if e.kind() == io::ErrorKind::TimedOut => "sealed",
            Err(e) => bail!("connecting to {:?}: {e}", l.local_addr()),
        },
        Listener::Unix(l) => match UnixStream::connect_addr(&l.local_addr()?) {
            Ok(_) => "open",
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => "sealed",
            Err(e) => bail!("connecting to {:?}: {e}", l.local_addr()),
        },
        _ => "not a stream listener",
    })
}

fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    match args.mode.as_str() {
        "exit1" => std::process::exit(1),
        "abort" => std::process::abort(),
        _ => {}
    }
    let net = if args.mode == "upgrade" {
        let me = std::env::args().next().context("no argv[0]")?;
        let mut child_args = vec![
            me,
            "--mode".into(),
            args.child_mode.clone(),
            "--max-seconds".into(),
            "30".into(),
        ];
        for l in &args.raw_listen {
            child_args.extend(["--listen".to_owned(), l.clone()]);
        }
        Net::builder()
            .args(child_args)
            .ready_timeout(Some(Duration::from_secs(5)))
            .build()?
    } else if let Some(p) = &args.pid_file {
        Net::builder().pid_file(p).build()?
    } else {
        Net::from_env()?
    };
    let env_clean = subprocess_env_clean()?;
    if args.mode == "check" {
        println!(
            "inherited={} ignored_pid={} generation={} has_parent={} env_clean={env_clean}",
            net.inherited().len(),
            net.ignored_listen_pid()
                .map_or("none".to_owned(), |p| p.to_string()),
            net.generation(),
            net.has_parent(),
        );
        return Ok(());
    }
    let deadline = Instant::now() + args.max;
    if args.mode == "hang" {
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        return Ok(());
    }

    let pid = std::process::id();
    let mut report = format!(
        "pid={pid} generation={} env_clean={env_clean}\n{}\n",
        net.generation(),
        signal_state()?
    );
    let mut listeners = Vec::new();
    for (name, endpoint) in &args.listen {
        let (l, _) = net.listen(endpoint, name.as_deref())?;
        let (inode, (cloexec, nonblock)) = match &l {
            Listener::Tcp(l) => (testkit::procfs::socket_inode(l)?, flags(l)?),
            Listener::Unix(l) => (testkit::procfs::socket_inode(l)?, flags(l)?),
            Listener::Udp(s) => (testkit::procfs::socket_inode(s)?, flags(s)?),
            _ => bail!("unexpected listener"),
        };
        report.push_str(&format!(
            "listener {endpoint} inode={inode} cloexec={cloexec} nonblock={nonblock}\n"
        ));
        listeners.push(l);
    }
    if args.mode == "close-early" {
        net.close()?;
        std::process::exit(1);
    }
    if let Some(dir) = &args.report_dir {
        let tmp = dir.join(format!(".{pid}.tmp"));
        fs::write(&tmp, &report)?;
        fs::rename(&tmp, dir.join(format!("{pid}.report")))?;
    }
    net.ready()?;
    net.claim_pid_file()?;
    if let Some(dir) = &args.report_dir {
        fs::write(dir.join(format!("{pid}.claimed")), "")?;
    }
    if args.mode == "close" {
        // A final stop: close and remove what is ours.
        drop(listeners);
        net.close()?;
        println!("closed");
        return Ok(());
    }
    if args.mode == "seal-probe" {
        net.close()?;
        for ((_, endpoint), l) in args.listen.iter().zip(&listeners) {
            println!("seal {endpoint} {}", seal_state(l)?);
        }
        return Ok(());
    }
    if args.mode == "upgrade" {
        match net.upgrade() {
            Ok(pid) => println!("upgraded {pid}"),
            Err(e) => {
                println!("failed {e}");
                // Still serving: each socket must still take connections.
                if args.probe_after_failure {
                    for ((_, endpoint), l) in args.listen.iter().zip(&listeners) {
                        println!("after {endpoint} {}", seal_state(l)?);
                    }
                }
            }
        }
        gracenet::notify::stopping()?;
        return Ok(());
    }

    // Serve until the deadline, without ever switching the shared sockets to blocking mode.
    let answer = format!("pid {pid}\n");
    while Instant::now() < deadline {
        let mut pfds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|l| {
                let fd = match l {
                    Listener::Tcp(l) => l.as_fd(),
                    Listener::Unix(l) => l.as_fd(),
                    Listener::Udp(s) => s.as_fd(),
                    _ => unreachable!("netchild only listens on tcp, unix and udp"),
                };
                PollFd::new(fd, PollFlags::POLLIN)
            })
            .collect();
        poll(&mut pfds, PollTimeout::from(100u16))?;
        let ready: Vec<bool> = pfds
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(pfds);
        for (l, ready) in listeners.iter().zip(ready) {
            if !ready {
                continue;
            }
            match l {
                Listener::Tcp(l) => {
                    if let Ok((s, _)) = l.accept() {
                        serve_stream(s, &answer);
                    }
                }
                Listener::Unix(l) => {
                    if let Ok((s, _)) = l.accept() {
                        serve_stream(s, &answer);
                    }
                }
                Listener::Udp(s) => {
                    let mut buf = [0u8; 512];
                    if let Ok((_, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(answer.as_bytes(), from);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Reads one line and answers with the pid. Accepted sockets are this process's own, so
/// blocking mode with a timeout is fine for them.
fn serve_stream<S>(s: S, answer: &str)
where
    S: std::io::Read + Write + SetTimeout,
{
    let _ = s.set_timeouts(Duration::from_secs(5));
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let _ = reader.get_mut().write_all(answer.as_bytes());
}

trait SetTimeout {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()>;
}

impl SetTimeout for std::net::TcpStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl SetTimeout for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netchild: {e:#}");
            ExitCode::from(2)
        }
    }
}
