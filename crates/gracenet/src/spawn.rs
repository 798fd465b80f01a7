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
//! `posix_spawn` does), on a small stack of its own. It starts with every signal blocked and
//! resets every handler it can before it unblocks them. Like `posix_spawn`, the calling thread
//! waits until the child has called `execve`: a child stopped (SIGSTOP) in those few
//! microseconds holds the upgrade, and this `Net`'s lock, until it is continued or killed. A `fork` would copy the page tables of a busy,
//! multithreaded server only for `execve` to throw them away, and leave the server to take a
//! copy-on-write fault on every page it writes next. Measured on a 2-core VM with `gracedemo`,
//! from preparing the child to its successful `execve`: median 0.29 ms this way, 0.63 ms with
//! `fork`.

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

use crate::Error;
use crate::env::FIRST_FD;

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

/// Starts `spec.path` with `fds` on descriptors 3.. and the readiness pipe after them.
///
/// Returns once the child has successfully called `execve`, or the error it got.
pub(crate) fn spawn(spec: Spec<'_>, fds: &[OwnedFd]) -> Result<Spawned, Error> {
    let spawn_err = |source: io::Error| Error::Spawn {
        path: spec.path.to_owned(),
        source,
    };
    let strings = CStrings::new(&spec).map_err(spawn_err)?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let (err_r, err_w_low) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;

    // Copies of every descriptor the child moves onto 3..=ready_fd, all numbered above that
    // range, so that no move overwrites a descriptor still to be moved or the error pipe. They
    // are close-on-exec: the new process keeps only the moved copies.
    let floor = crate::env::ready_fd(fds.len()) + 1;
    let sources = fds
        .iter()
        .map(AsFd::as_fd)
        .chain(iter::once(ready_w.as_fd()))
        .map(|fd| dup_above(fd, floor))
        .collect::<Result<Vec<_>, _>>()
        .map_err(spawn_err)?;
    let err_w = dup_above(err_w_low.as_fd(), floor).map_err(spawn_err)?;
    drop(err_w_low);
    let source_fds: Vec<RawFd> = sources.iter().map(AsRawFd::as_raw_fd).collect();

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
    drop(sources);
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

/// The child's stack between `clone` and `execve`: it runs only `exec_child`, a few frames of
/// plain system calls.
const CHILD_STACK: usize = 64 * 1024;

/// An anonymous mapping for the child's stack, with an inaccessible guard page below it.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(4096);
        let len = CHILD_STACK + page;
        // SAFETY: a fresh anonymous private mapping; nothing else refers to that memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping made just above: an overflow faults there
        // instead of running into other memory.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The highest address, where a downward-growing stack starts (page aligned, so 16-byte
    /// aligned as the ABI wants).
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the child that used it has
        // called execve or exited by the time `start_child` returns (CLONE_VFORK).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Starts the child, sharing this process's memory until it calls `execve` or exits; returns
/// once it has, with its pid.
fn start_child(exec: &Exec<'_>) -> io::Result<Pid> {
    extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&Exec` passed to clone below, alive until clone returns in
        // the parent, which is after this child has called execve or exited.
        let exec = unsafe { &*arg.cast_const().cast::<Exec<'_>>() };
        // SAFETY: this is the child of the clone below, started with every signal blocked.
        unsafe { exec_child(exec) }
    }

    let stack = ChildStack::new()?;
    // The child starts with this thread's signal mask: block everything, so that no handler
    // of this process runs in the child (it would run on this process's memory) before
    // `exec_child` has reset the handlers. Through the system call itself: the C library's
    // `pthread_sigmask` leaves its own two internal signals unblocked.
    let all = [u64::MAX; 2];
    let mut old = [0u64; 2];
    // The kernel's signal set: one bit per signal (64 bits on most architectures, 128 on
    // MIPS), at most the 16 bytes of the buffers.
    let set_size = usize::try_from(libc::SIGRTMAX() / 8).map_or(8, |n| n.clamp(8, 16));
    // SAFETY: rt_sigprocmask reads `set_size` bytes from `all` and writes as many into `old`,
    // both 16-byte arrays that live across the call.
    if unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            all.as_ptr(),
            old.as_mut_ptr(),
            set_size,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CLONE_VM | CLONE_VFORK suspends this thread until the child has called execve
    // or exited, so the child's use of this thread's stack-allocated `exec`, and of `stack`,
    // ends before either goes away. The child runs only `exec_child` (async-signal-safe
    // calls, no allocation, no locks) on its own stack, and never returns into this
    // function. SIGCHLD makes it an ordinary child for waitpid.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(exec).cast_mut().cast(),
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's mask from the set saved above, of the same size.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            old.as_ptr(),
            std::ptr::null_mut::<u64>(),
            set_size,
        )
    };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    Ok(Pid::from_raw(pid))
}

/// Everything the child needs, prepared before it starts.
struct Exec<'a> {
    sources: &'a [RawFd],
    path: *const libc::c_char,
    cwd: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    pid_digits: *mut u8,
    err_fd: RawFd,
    /// The highest signal number (`SIGRTMAX`), read before the child starts.
    max_signal: libc::c_int,
}

/// Runs in the child: moves the descriptors into place and execs.
///
/// # Safety
///
/// Must only be called in a child just started by `start_child` (sharing the parent's
/// memory, every signal blocked), with pointers into memory prepared before: `pid_digits`
/// must have room for at least 11 bytes followed by zeros. Only async-signal-safe functions
/// are called: no allocation, no locks, no panics.
unsafe fn exec_child(x: &Exec<'_>) -> ! {
    for (i, &src) in x.sources.iter().enumerate() {
        // SAFETY: dup2 on descriptor numbers; every source is above the target range.
        if unsafe { libc::dup2(src, FIRST_FD + i as RawFd) } < 0 {
            // SAFETY: see `fail`.
            unsafe { fail(x.err_fd) }
        }
    }
    // SAFETY: chdir reads a NUL-terminated string prepared before the child started.
    if unsafe { libc::chdir(x.cwd) } < 0 {
        // SAFETY: see `fail`.
        unsafe { fail(x.err_fd) }
    }
    // A handler of the parent's must never run here, on the parent's memory: reset every
    // caught signal to its default while all are still blocked. (execve would reset them too,
    // but only after the mask below lets them in.) Ignored signals stay ignored, as across
    // any exec, except SIGPIPE below.
    for sig in 1..=x.max_signal {
        // SAFETY: zeroed storage is valid for a sigaction struct.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reads one signal's disposition into valid storage. The C library refuses
        // its two internal signals; their handlers are only ever sent to the parent's threads
        // by thread id, never to this new one.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut action) } == 0
            && action.sa_sigaction != libc::SIG_DFL
            && action.sa_sigaction != libc::SIG_IGN
        {
            // SAFETY: sets one signal's disposition to its default.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // Signal state survives execve: unblock everything, and give SIGPIPE its default action
    // back (the Rust runtime ignores it, and an ignored signal stays ignored across exec).
    // SAFETY: a zeroed sigset_t is valid storage; sigemptyset initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is valid, writable storage for a signal set.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: sets the signal mask of this (only) thread from a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    // SAFETY: resets one signal's disposition to its default.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };

    // The system call, not the C library's `getpid`: older C libraries cache the pid in
    // thread memory, which is the parent's here.
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::syscall(libc::SYS_getpid) };
    let pid = u32::try_from(pid).unwrap_or(0);
    let mut digits = [0u8; 10];
    let mut n = pid;
    let mut start = digits.len();
    while start > 0 {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (k, &d) in digits[start..].iter().enumerate() {
        // SAFETY: at most 10 digits go into room of PID_ROOM (24) zeroed bytes, leaving the
        // terminating NUL in place.
        unsafe { x.pid_digits.wrapping_add(k).write(d) };
    }

    // SAFETY: path, argv and envp are NUL-terminated strings and NULL-terminated arrays
    // prepared before the child started.
    unsafe { libc::execve(x.path, x.argv, x.envp) };
    // SAFETY: see `fail`.
    unsafe { fail(x.err_fd) }
}

/// Reports `errno` through the error pipe and exits without running any destructors.
///
/// # Safety
///
/// Only for the child: `_exit` ends it at once, running nothing of the parent's (whose memory
/// it shares).
unsafe fn fail(err_fd: RawFd) -> ! {
    let errno = Errno::last_raw().to_ne_bytes();
    // SAFETY: writes 4 bytes from a local array to a descriptor; a failure cannot be reported
    // anywhere else, and the parent then sees a short message.
    unsafe { libc::write(err_fd, errno.as_ptr().cast(), errno.len()) };
    // SAFETY: _exit ends the process at once.
    unsafe { libc::_exit(127) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pid_entry_is_the_protocols_variable() {
        let expected = format!("{}=", crate::env::LISTEN_PID);
        assert_eq!(super::LISTEN_PID_PREFIX, expected.as_bytes());
    }
}
