//! The child side of a spawn: a process that shares the parent's memory (`CLONE_VM |
//! CLONE_VFORK`) on a stack of its own, moves the descriptors into place, resets its signal
//! handling, writes its pid into `LISTEN_PID`, and calls `execve`. Everything it runs is
//! prepared by the parent first: no allocation, no locks, async-signal-safe calls only.

use std::io;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::env::FIRST_FD;

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
pub(super) fn start_child(exec: &Exec<'_>) -> io::Result<Pid> {
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
    let set_size = usize::try_from((libc::SIGRTMAX() + 1) / 8).map_or(8, |n| n.clamp(8, 16));
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
pub(super) struct Exec<'a> {
    pub(super) sources: &'a [RawFd],
    pub(super) path: *const libc::c_char,
    pub(super) cwd: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    pub(super) pid_digits: *mut u8,
    pub(super) err_fd: RawFd,
    /// The highest signal number (`SIGRTMAX`), read before the child starts.
    pub(super) max_signal: libc::c_int,
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
