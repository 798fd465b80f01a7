//! Processes: the harness as a subreaper, Ctrl-C, signals, exit watches, and what /proc says
//! about each process (state, parent, open descriptors, resident memory).

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe. Every wait of the harness polls the flag.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns Ctrl-C (and SIGTERM, SIGHUP) into a flag that every wait of the harness checks, so
/// that the harness unwinds through its cleanup instead of dying with servers left running.
pub(crate) fn install_interrupt_handler() -> io::Result<()> {
    let handler = on_interrupt as extern "C" fn(libc::c_int);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler does one atomic store, which is async-signal-safe.
        let previous = unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error when Ctrl-C was pressed, so that `?` unwinds to the cleanup.
pub(crate) fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d` in short steps, returning early with an error on Ctrl-C.
pub(crate) fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Sleeps until `at` (not at all if it has passed), returning early on Ctrl-C.
pub(crate) fn sleep_until(at: Instant) -> Result<()> {
    sleep(at.saturating_duration_since(Instant::now()))
}

/// Makes this process the reaper of its orphaned descendants: every server generation after
/// the first is the child of a process that exits, and so becomes ours to wait for.
pub(crate) fn become_subreaper() -> io::Result<()> {
    let on: libc::c_ulong = 1;
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and reads no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, on, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the descriptor limit (soft, and hard when allowed) to `want`; returns the soft limit
/// now in force. Children inherit it.
pub(crate) fn raise_fd_limit(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // Not allowed to raise the hard limit: go as far as it allows.
    let capped = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(capped.rlim_cur)
}

/// Sends `signal` to `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One line of /proc/PID/stat, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: u32,
    pub(crate) comm: String,
    /// R, S, D, Z, ...
    pub(crate) state: char,
    pub(crate) ppid: u32,
    pub(crate) pgrp: u32,
}

impl ProcStat {
    pub(crate) fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses /proc/PID/stat; the command name may hold spaces and parentheses, so the fields
/// after it are found from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process visible in /proc.
pub(crate) fn processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

pub(crate) fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Resident memory (VmRSS) in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// A process's open descriptors, split into TCP connections and the rest (listening sockets,
/// pipes, epoll, files...). The rest is what should not change from one generation to the next
/// under the same load; the connections come and go with the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fds {
    pub(crate) total: usize,
    pub(crate) connections: usize,
}

impl Fds {
    pub(crate) fn base(&self) -> usize {
        self.total - self.connections
    }
}

pub(crate) fn fds(pid: u32) -> Option<Fds> {
    let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| {
            let link = std::fs::read_link(e.ok()?.path()).ok()?;
            Some(link.to_string_lossy().into_owned())
        })
        .collect();
    let sockets: BTreeSet<u64> = links
        .iter()
        .filter_map(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    // Read the tables after the links: a connection closed in between is no longer in them
    // and counts as a connection (not as a leak).
    let not_connections = not_tcp_connections(&sockets);
    let connections = sockets.len() - not_connections;
    Some(Fds {
        total: links.len(),
        connections,
    })
}

/// How many of `sockets` (inodes) are listening TCP sockets or unix sockets, from
/// /proc/net/{tcp,tcp6,unix}. One pass over each table, looking only at the columns needed:
/// after a scenario with a new connection per request the TCP tables hold tens of thousands
/// of TIME_WAIT lines.
fn not_tcp_connections(sockets: &BTreeSet<u64>) -> usize {
    let mut found = BTreeSet::new();
    for (table, tcp) in [
        ("/proc/net/tcp", true),
        ("/proc/net/tcp6", true),
        ("/proc/net/unix", false),
    ] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_ascii_whitespace();
            // tcp: sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            // unix: Num RefCount Protocol Flags Type St Inode Path
            let (state, inode) = if tcp {
                (fields.nth(3), fields.nth(5))
            } else {
                (None, fields.nth(6))
            };
            if tcp && state != Some("0A") {
                continue;
            }
            if let Some(inode) = inode.and_then(|i| i.parse::<u64>().ok()) {
                if sockets.contains(&inode) {
                    found.insert(inode);
                }
            }
        }
    }
    found.len()
}

/// Reaps the exited children in process group `pgid`, without blocking.
pub(crate) fn reap_group(pgid: u32) -> Vec<(u32, ExitStatus)> {
    let Ok(group) = libc::pid_t::try_from(pgid) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    // Bounded: each round reaps one child, and there are only so many.
    for _ in 0..1024 {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into our local.
        let pid = unsafe { libc::waitpid(-group, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        reaped.push((pid.unsigned_abs(), ExitStatus::from_raw(status)));
    }
    reaped
}

/// Waits for one process to exit (any process, not only a child) through a pidfd, on a
/// thread of its own, and records when.
#[derive(Debug)]
pub(crate) struct ExitWatch {
    thread: Option<JoinHandle<Option<Instant>>>,
    already_gone: bool,
}

impl ExitWatch {
    /// Starts watching `pid` for at most `limit`. A pid that is already gone (or a zombie)
    /// counts as having exited now.
    pub(crate) fn start(pid: u32, limit: Duration) -> ExitWatch {
        let fd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(_) => {
                return ExitWatch {
                    thread: None,
                    already_gone: true,
                };
            }
        };
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while Instant::now() < end && !interrupted() {
                if poll_readable(&fd, Duration::from_millis(50)) {
                    return Some(Instant::now());
                }
            }
            None
        });
        ExitWatch {
            thread: Some(thread),
            already_gone: false,
        }
    }

    /// When the process exited; `None` if it had not within the limit.
    pub(crate) fn wait(self) -> Option<Instant> {
        if self.already_gone {
            return Some(Instant::now());
        }
        self.thread.and_then(|t| t.join().ok().flatten())
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let flags: libc::c_uint = 0;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the descriptor was just returned to us by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn poll_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll reads and writes the one pollfd we pass, which we own.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let s = parse_stat("42 (a (b) c) S 7 42 42 0 -1 4194560 0 0").unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.state, s.ppid, s.pgrp),
            (42, "a (b) c", 'S', 7, 42)
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) Z 0 1").unwrap().is_zombie());
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(stat(me).is_some_and(|s| !s.is_zombie()));
        assert!(fd_count(me).unwrap() >= 3);
        assert!(rss_kib(me).unwrap() > 0);
        let fds = fds(me).unwrap();
        assert!(fds.base() <= fds.total);
    }
}
