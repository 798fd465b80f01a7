//! Waiting for a process to exit, any process and not only a child, through a pidfd: the
//! moment it exits, not when someone reaps it.

use std::os::fd::OwnedFd;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use super::interrupt;

/// Waits for one process to exit on a thread of its own, and records when.
#[derive(Debug)]
pub(crate) struct ExitWatch {
    /// `None`: the process was gone before the watch started.
    thread: Option<JoinHandle<Option<Instant>>>,
}

impl ExitWatch {
    /// Starts watching `pid` for at most `limit`. A pid that is already gone (or a zombie)
    /// counts as having exited now.
    pub(crate) fn start(pid: u32, limit: Duration) -> ExitWatch {
        let fd = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok());
        let Some(fd) = fd else {
            return ExitWatch { thread: None };
        };
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while Instant::now() < end && !interrupt::interrupted() {
                if readable(&fd, Duration::from_millis(50)) {
                    return Some(Instant::now());
                }
            }
            None
        });
        ExitWatch {
            thread: Some(thread),
        }
    }

    /// When the process exited; `None` if it had not within the limit.
    pub(crate) fn wait(self) -> Option<Instant> {
        match self.thread {
            None => Some(Instant::now()),
            Some(thread) => thread.join().ok().flatten(),
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

/// Whether the pidfd became readable (its process exited) within `timeout`.
fn readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let Ok(timeout) = Timespec::try_from(timeout) else {
        return false;
    };
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::IN | PollFlags::HUP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_child_exit_and_a_gone_pid() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("starting true");
        let watch = ExitWatch::start(child.id(), Duration::from_secs(5));
        assert!(watch.wait().is_some());
        child.wait().expect("reaping true");
        // Reaped: gone, which counts as exited.
        let gone = ExitWatch::start(child.id(), Duration::from_secs(5));
        assert!(gone.is_finished());
        assert!(gone.wait().is_some());
    }
}
