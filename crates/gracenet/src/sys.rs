//! The descriptor-level operations: checking and adopting inherited fds, a socket's kind and
//! address, sealing, and the process environment. Together with `spawn/`, the only place in
//! the workspace with unsafe code, and the only one that turns raw descriptor numbers into
//! owned ones.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::stat::{SFlag, fstat};
use socket2::{Domain, Protocol, Socket, Type};

use crate::env::{self, Handed};
use crate::{Endpoint, Error, Kind};

/// The descriptor limit of this process (`RLIMIT_NOFILE`, soft), which bounds any descriptor
/// number the environment may name.
pub(crate) fn fd_limit() -> u64 {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => soft,
        // Without the limit, fall back to the largest descriptor number the kernel can hand out.
        Err(_) => i32::MAX as u64,
    }
}

/// Whether `fd` is an open descriptor of this process.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags; for a number that is not an open
    // descriptor it fails with EBADF and touches nothing.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Whether the inherited descriptors were adopted: they are owned by one `Net` per process.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// The descriptors the environment hands to this process: the sockets in order from fd 3, then
/// the readiness pipe.
pub(crate) type Owned = (Vec<OwnedFd>, Option<OwnedFd>);

/// Reads this process's environment (`env::parse`), removes the protocol's variables from it
/// when that is sound, checks every descriptor it names, and takes ownership of them, the first
/// time it is called in this process (`None` after that: another `Net` owns them already).
///
/// Every descriptor is checked before any is owned, so that an error leaves them all alone.
/// The whole sequence is here, next to the one place that turns the numbers into owned
/// descriptors, so that what makes that sound is checked where it is relied on.
pub(crate) fn adopt_inherited() -> Result<(Handed, Option<Owned>), Error> {
    let parsed = env::parse(
        |k| std::env::var_os(k),
        std::process::id(),
        fd_limit(),
        is_open,
    );
    remove_env_vars(&env::ALL);
    let handed = parsed?;
    // (`env::parse` checked that each socket's descriptor is open.)
    for (fd, name) in &handed.fds {
        if !is_socket(*fd) {
            return Err(Error::NotASocket {
                fd: *fd,
                name: name.clone(),
            });
        }
    }
    if let Some(fd) = handed.ready_fd.filter(|&fd| !is_open(fd)) {
        return Err(Error::InvalidEnv {
            var: env::READY_FD,
            value: fd.to_string(),
            reason: "not an open descriptor".into(),
        });
    }
    if ADOPTED.swap(true, Ordering::SeqCst) {
        return Ok((handed, None));
    }
    let sockets = handed
        .fds
        .iter()
        // SAFETY: open (checked by `env::parse` above); this process's own environment names
        // it (`LISTEN_PID` is this process), and sd_listen_fds(3) hands such descriptors to the
        // process to own; the ADOPTED flag makes this the only place that ever takes them.
        .map(|(fd, _)| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    // SAFETY: as above, for the readiness pipe named by GRACENET_READY_FD (checked open above).
    let ready = handed
        .ready_fd
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    Ok((handed, Some((sockets, ready))))
}

/// Removes `vars` from this process's environment, so that subprocesses the application starts
/// never see them, when the process has a single thread.
///
/// Changing the environment is only sound while no other thread can read it, so with more
/// than one thread the variables stay; they are harmless to well-behaved programs
/// (`LISTEN_PID` never equals a subprocess's pid), and `scrub_command` removes them per
/// command.
fn remove_env_vars(vars: &[&str]) {
    let single_threaded = std::fs::read_dir("/proc/self/task")
        .map(Iterator::count)
        .is_ok_and(|n| n == 1);
    if !single_threaded {
        return;
    }
    for var in vars {
        if std::env::var_os(var).is_some() {
            // SAFETY: this process has exactly one thread (checked above, and only this thread
            // could start another), so nothing can read the environment concurrently.
            unsafe { std::env::remove_var(var) };
        }
    }
}

/// Marks an adopted descriptor close-on-exec, so that subprocesses never inherit it by
/// accident; handing it to the next process moves a copy onto fd 3.. explicitly.
pub(crate) fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Starts writing `file`'s dirty pages out, without waiting for it (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`). Only to make a later operation cheaper: a failure changes nothing
/// and is ignored.
pub(crate) fn start_writeback(file: &impl AsFd) {
    // SAFETY: sync_file_range reads nothing from memory; on a descriptor it cannot act on it
    // fails with an error, which is ignored.
    let _ = unsafe {
        libc::sync_file_range(file.as_fd().as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Whether a descriptor is a pipe (the readiness pipe must be one).
pub(crate) fn is_fifo(fd: &OwnedFd) -> io::Result<bool> {
    let st = fstat(fd)?;
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
}

/// Whether `fd` is a socket: `SO_TYPE` fails with `ENOTSOCK` on anything else.
pub(crate) fn is_socket(fd: RawFd) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`, which is a valid c_int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut ty).cast(),
            &mut len,
        )
    };
    rc == 0
}

/// The kind and local address of a socket.
pub(crate) fn inspect(sock: &Socket) -> io::Result<(Kind, Option<Endpoint>)> {
    let domain = sock.domain()?;
    let ty = sock.r#type()?;
    let inet = domain == Domain::IPV4 || domain == Domain::IPV6;
    let kind = if inet && ty == Type::STREAM {
        match sock.protocol()? {
            Some(p) if p == Protocol::SCTP => Kind::Other,
            _ => Kind::Tcp,
        }
    } else if inet && ty == Type::DGRAM {
        Kind::Udp
    } else if domain == Domain::UNIX && ty == Type::STREAM {
        Kind::UnixStream
    } else {
        Kind::Other
    };
    let addr = sock.local_addr()?;
    let endpoint = match kind {
        Kind::Tcp => addr.as_socket().map(Endpoint::Tcp),
        Kind::Udp => addr.as_socket().map(Endpoint::Udp),
        Kind::UnixStream => {
            if let Some(path) = addr.as_pathname() {
                Some(Endpoint::Unix(PathBuf::from(path)))
            } else {
                addr.as_abstract_namespace()
                    .map(|n| Endpoint::UnixAbstract(n.to_vec()))
            }
        }
        Kind::Other => None,
    };
    Ok((kind, endpoint))
}

/// The classic BPF program that [`seal`] attaches to a TCP listener. A socket filter on a TCP
/// socket sees each segment from its TCP header on; byte 13 holds the flags. A segment with
/// SYN set and ACK clear opens a connection: dropped. Everything else, above all the ACK that
/// completes a handshake already under way, passes.
const DROP_NEW_CONNECTIONS: [socket2::SockFilter; 5] = {
    const LOAD_FLAGS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    [
        socket2::SockFilter::new(LOAD_FLAGS, 0, 0, 13),
        socket2::SockFilter::new(AND, 0, 0, SYN | ACK),
        // A plain SYN falls through to "drop"; anything else jumps over it.
        socket2::SockFilter::new(JEQ, 0, 1, SYN),
        socket2::SockFilter::new(RET, 0, 0, 0),
        socket2::SockFilter::new(RET, 0, 0, u32::MAX),
    ]
};

/// Makes a listening socket take no new connections while the ones already queued (and, for
/// TCP, those whose handshake is under way) can still be accepted from any copy of it.
///
/// TCP: a socket filter drops every SYN, so a client's connection attempt goes unanswered and
/// is refused when it retries after the socket has closed. Unix stream: `shutdown(SHUT_RD)`,
/// after which `connect(2)` is refused at once. Anything else is left alone. Both act on the
/// socket, not the descriptor, and cannot be undone: only for a socket no other process will
/// accept from again.
pub(crate) fn seal(sock: &Socket, kind: Kind) -> io::Result<()> {
    match kind {
        Kind::Tcp => sock.attach_filter(&DROP_NEW_CONNECTIONS),
        Kind::UnixStream => sock.shutdown(std::net::Shutdown::Read),
        Kind::Udp | Kind::Other => Ok(()),
    }
}
