//! Signals to processes and reaping a process group: the system calls the harness makes about
//! processes, all through nix (becoming their subreaper is the test kit's).

use std::fmt;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

fn pid(pid: u32) -> Result<Pid, Errno> {
    i32::try_from(pid)
        .map(Pid::from_raw)
        .map_err(|_| Errno::ESRCH)
}

/// Sends `signal` to `target`.
pub(crate) fn signal(target: u32, signal: Signal) -> Result<(), Errno> {
    signal::kill(pid(target)?, signal)
}

/// Sends `signal` to every process of group `pgid`.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> Result<(), Errno> {
    signal::killpg(pid(pgid)?, signal)
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(Signal),
}

impl Exit {
    pub(crate) fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// Reaps the exited children in process group `pgid`, without blocking.
pub(crate) fn reap_group(pgid: u32) -> Vec<(u32, Exit)> {
    let Ok(group) = i32::try_from(pgid) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    // Bounded: each round reaps one child, and there are only so many.
    for _ in 0..1024 {
        let (child, exit) = match waitpid(Pid::from_raw(-group), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(child, code)) => (child, Exit::Code(code)),
            Ok(WaitStatus::Signaled(child, signal, _)) => (child, Exit::Signal(signal)),
            // None exited (StillAlive), no child left (ECHILD), or a state we did not ask for.
            _ => break,
        };
        reaped.push((child.as_raw().unsigned_abs(), exit));
    }
    reaped
}
