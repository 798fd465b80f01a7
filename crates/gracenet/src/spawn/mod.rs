//! Starting the next process with the listening sockets on fds 3.. and waiting for it to
//! report ready.
//!
//! This is `clone` + `execve` rather than `std::process::Command`, for two reasons.
//! `LISTEN_PID` must hold the child's own pid, which exists only once the child does, and
//! `Command` builds its environment before it starts the child. And moving descriptors onto
//! 3.. inside a `pre_exec` hook can overwrite the pipe `Command` uses to report a failed
//! `execve`, so that `spawn()` returns `Ok` for a binary that never ran. Here every descriptor
//! the child needs is first copied *above* the target range, the exec-error pipe included, so
//! the moves can never collide, and a failed `execve` always reaches the parent as an error.
//!
//! The child shares the parent's memory until it calls `execve` (`CLONE_VM | CLONE_VFORK`, as
//! `posix_spawn` does), on a small stack of its own (`child.rs`): a `fork` would copy the page
//! tables of a busy server only for `execve` to throw them away, and leave the server a
//! copy-on-write fault on every page it writes next (ARCHITECTURE.md has the figures). The
//! child starts with every signal blocked and resets every handler it can before it unblocks
//! them. Like `posix_spawn`, the calling thread waits until the child has called `execve`: a
//! child stopped (SIGSTOP) in those few microseconds holds the upgrade until it is continued
//! or killed (the `Net` itself stays usable: its lock is not held meanwhile).

mod child;

use std::ffi::{CString, OsString};
use std::io;
use std::iter;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2, read};

use self::child::{Exec, start_child};
use crate::Error;

/// The room reserved in the `LISTEN_PID=` entry for the child to write its pid into.
const PID_ROOM: usize = 24;
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

/// What the new process gets besides the sockets.
pub(crate) struct Spec<'a> {
    pub(crate) path: &'a Path,
    pub(crate) args: &'a [OsString],
    pub(crate) cwd: &'a Path,
    /// The complete environment except `LISTEN_PID`, which only the new process knows.
    pub(crate) env: Vec<(OsString, OsString)>,
}

/// A new process that has been started and not yet reported ready.
///
/// Dropping it before [`wait_ready`](Spawned::wait_ready) succeeded kills and reaps it, so a
/// failed upgrade never leaves a half-started process or a zombie behind.
#[derive(Debug)]
pub(crate) struct Spawned {
    pid: Pid,
    ready: OwnedFd,
    pidfd: Option<OwnedFd>,
    settled: bool,
}

/// The strings of `execve`, NUL-terminated, made before the child starts (the child of a
/// multithreaded process must not allocate).
struct CStrings {
    path: CString,
    cwd: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl CStrings {
    fn new(spec: &Spec<'_>) -> io::Result<CStrings> {
        let cstring = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "argument or variable holds a NUL byte",
                )
            })
        };
        let env = spec
            .env
            .iter()
            .map(|(k, v)| {
                let mut entry = Vec::with_capacity(k.len() + v.len() + 1);
                entry.extend_from_slice(k.as_bytes());
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                cstring(&entry)
            })
            .collect::<io::Result<_>>()?;
        Ok(CStrings {
            path: cstring(spec.path.as_os_str().as_bytes())?,
            cwd: cstring(spec.cwd.as_os_str().as_bytes())?,
            argv: spec
                .args
                .iter()
                .map(|a| cstring(a.as_bytes()))
                .collect::<io::Result<_>>()?,
            env,
        })
    }
}

/// A null-terminated array of pointers to `strings`, then `extra`.
fn pointers(strings: &[CString], extra: Option<*const libc::c_char>) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(extra)
        .chain(iter::once(std::ptr::null()))
        .collect()
}

/// Copies of the sockets a child gets, each numbered above the range the child moves them into
/// (3 up to the readiness pipe after them), so that no move overwrites a descriptor still to
/// be moved or the error pipe. They are close-on-exec: the new process keeps only the moved
/// copies. Made while the sockets are at hand, so that the child can be started after letting
/// go of them.
#[derive(Debug)]
pub(crate) struct Sources(Vec<OwnedFd>);

impl Sources {
    pub(crate) fn copy<'a>(
        fds: impl ExactSizeIterator<Item = BorrowedFd<'a>>,
    ) -> io::Result<Sources> {
        let floor = crate::env::ready_fd(fds.len()) + 1;
        fds.map(|fd| dup_above(fd, floor))
            .collect::<io::Result<_>>()
            .map(Sources)
    }

    /// The number just above the range the child moves descriptors into.
    fn floor(&self) -> RawFd {
        crate::env::ready_fd(self.0.len()) + 1
    }
}

/// Starts `spec.path` with the `sockets` on descriptors 3.. and the readiness pipe after them.
///
/// Returns once the child has successfully called `execve`, or the error it got.
pub(crate) fn spawn(spec: Spec<'_>, sockets: Sources) -> Result<Spawned, Error> {
    let spawn_err = |source: io::Error| Error::Spawn {
        path: spec.path.to_owned(),
        source,
    };
    let strings = CStrings::new(&spec).map_err(spawn_err)?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let (err_r, err_w_low) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;

    // The readiness pipe and the error pipe above the range too (see `Sources`).
    let floor = sockets.floor();
    let ready_w = dup_above(ready_w.as_fd(), floor).map_err(spawn_err)?;
    let err_w = dup_above(err_w_low.as_fd(), floor).map_err(spawn_err)?;
    drop(err_w_low);
    let source_fds: Vec<RawFd> = (sockets.0.iter().chain(iter::once(&ready_w)))
        .map(AsRawFd::as_raw_fd)
        .collect();

    // The `LISTEN_PID=` entry is written by the child once it exists, in place, into room
    // reserved here.
    let mut pid_entry = Vec::with_capacity(LISTEN_PID_PREFIX.len() + PID_ROOM);
    pid_entry.extend_from_slice(LISTEN_PID_PREFIX);
    pid_entry.resize(LISTEN_PID_PREFIX.len() + PID_ROOM, 0);
    let pid_entry_ptr: *mut u8 = pid_entry.as_mut_ptr();
    let argv = pointers(&strings.argv, None);
    let envp = pointers(&strings.env, Some(pid_entry_ptr.cast_const().cast()));
    let exec = Exec {
        sources: &source_fds,
        path: strings.path.as_ptr(),
        cwd: strings.cwd.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        pid_digits: pid_entry_ptr.wrapping_add(LISTEN_PID_PREFIX.len()),
        err_fd: err_w.as_raw_fd(),
        max_signal: libc::SIGRTMAX(),
    };
    let pid = start_child(&exec).map_err(spawn_err)?;

    // The parent's copies: closing them is what lets the error pipe reach EOF on a
    // successful exec, and the readiness pipe reach EOF when the child goes away.
    drop(sockets);
    drop(ready_w);
    drop(err_w);
    exec_result(&err_r, pid).map_err(|e| match e {
        ExecFailure::Read(source) => spawn_err(source),
        ExecFailure::Exec(source) => Error::Exec {
            path: spec.path.to_owned(),
            source,
        },
    })?;
    Ok(Spawned {
        pid,
        ready: ready_r,
        pidfd: pidfd_open(pid),
        settled: false,
    })
}

enum ExecFailure {
    /// The error pipe could not be read; the child was killed.
    Read(io::Error),
    /// The child failed before or in `execve`, with this error; it was reaped.
    Exec(io::Error),
}

/// Reads the error pipe until EOF (a successful `execve` closed the child's end) or the
/// `errno` the child wrote before it exited.
fn exec_result(err_r: &OwnedFd, pid: Pid) -> Result<(), ExecFailure> {
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < errno.len() {
        match read(err_r, &mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                kill_and_reap(pid);
                return Err(ExecFailure::Read(e.into()));
            }
        }
    }
    if got == 0 {
        return Ok(());
    }
    // The child failed before or in execve and exits with 127: reap it.
    reap(pid);
    Err(ExecFailure::Exec(if got == errno.len() {
        io::Error::from_raw_os_error(i32::from_ne_bytes(errno))
    } else {
        io::Error::other("the new process failed before execve")
    }))
}

impl Spawned {
    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Waits until the child writes to the readiness pipe, exits, `timeout` passes, or
    /// `cancel` is set.
    ///
    /// On any error the child has been killed (if still running) and reaped. On success it is
    /// still owned: [`detach`](Spawned::detach) it, or dropping it kills it.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Option<Duration>,
        cancel: &AtomicBool,
    ) -> Result<(), Error> {
        let pid = self.pid();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pipe_open = true;
        loop {
            if cancel.load(Ordering::SeqCst) {
                self.kill();
                return Err(Error::Cancelled);
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                // A report that arrived just as the time ran out still counts.
                if pipe_open && self.try_read_ready() {
                    return Ok(());
                }
                self.kill();
                return Err(Error::ReadyTimeout {
                    pid,
                    timeout: timeout.unwrap_or_default(),
                });
            }
            // Exits are noticed through the pidfd; cancellation (and exits without a pidfd, on
            // Linux before 5.3) by waking up every CHECK_EVERY.
            let wait = remaining.map_or(CHECK_EVERY, |r| r.min(CHECK_EVERY));
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            let mut pfds = Vec::with_capacity(2);
            if pipe_open {
                pfds.push(PollFd::new(self.ready.as_fd(), PollFlags::POLLIN));
            }
            if let Some(pidfd) = &self.pidfd {
                pfds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut pfds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    self.kill();
                    return Err(Error::Wait {
                        pid,
                        source: e.into(),
                    });
                }
            }
            let pipe_woke = pipe_open
                && pfds
                    .first()
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty());
            drop(pfds);

            if pipe_woke {
                let mut buf = [0u8; 64];
                match read(&self.ready, &mut buf) {
                    Ok(0) => pipe_open = false,
                    Ok(_) => return Ok(()),
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(e) => {
                        self.kill();
                        return Err(Error::Wait {
                            pid,
                            source: e.into(),
                        });
                    }
                }
            }

            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.settled = true;
                    return Err(Error::ChildExited { pid, code });
                }
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    self.settled = true;
                    return Err(Error::ChildKilled {
                        pid,
                        signal: signal.as_str().to_owned(),
                    });
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    // ECHILD: something else in this process reaped it.
                    self.settled = true;
                    return Err(Error::Wait {
                        pid,
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// Whether the readiness report is waiting in the pipe, without blocking.
    fn try_read_ready(&mut self) -> bool {
        let mut pfd = [PollFd::new(self.ready.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut pfd, PollTimeout::ZERO), Ok(n) if n > 0) {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(read(&self.ready, &mut buf), Ok(n) if n > 0)
    }

    /// Lets the process run on its own: dropping `self` no longer kills it.
    pub(crate) fn detach(&mut self) {
        self.settled = true;
    }

    fn kill(&mut self) {
        if !self.settled {
            kill_and_reap(self.pid);
            self.settled = true;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How often the wait wakes up to check for a cancellation (and, without a pidfd, for an
/// exit).
const CHECK_EVERY: Duration = Duration::from_millis(10);

fn kill_and_reap(pid: Pid) {
    // ESRCH (already gone) is fine: it is reaped below either way.
    let _ = kill(pid, Signal::SIGKILL);
    reap(pid);
}

fn reap(pid: Pid) {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            // Reaped, or ECHILD: nothing left to reap.
            _ => return,
        }
    }
}

fn dup_above(fd: BorrowedFd<'_>, floor: RawFd) -> io::Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(floor))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; it touches
    // no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    let fd = RawFd::try_from(fd).ok()?;
    // SAFETY: pidfd_open returned a new descriptor (always close-on-exec) that nothing owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pid_entry_is_the_protocols_variable() {
        let expected = format!("{}=", crate::env::LISTEN_PID);
        assert_eq!(super::LISTEN_PID_PREFIX, expected.as_bytes());
    }
}
