//! The descriptor-level operations on inherited fds. Together with `spawn.rs`, the only place
//! in the workspace that turns raw descriptor numbers into owned ones.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::stat::{SFlag, fstat};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{Endpoint, Kind};

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

/// Takes ownership of an inherited descriptor.
///
/// # Safety
///
/// `fd` must be open, and nothing else in this process may own or close it: by
/// sd_listen_fds(3) the descriptors named by `LISTEN_FDS` are handed to this process to own,
/// and `Net` adopts them at most once per process.
pub(crate) unsafe fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees `fd` is open and unowned.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Marks an adopted descriptor close-on-exec, so that subprocesses never inherit it by
/// accident; handing it to the next process moves a copy onto fd 3.. explicitly.
pub(crate) fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
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

/// The inode of a socket, which names it across processes (tests compare it).
pub fn socket_inode(fd: &impl AsFd) -> io::Result<u64> {
    Ok(fstat(fd.as_fd())?.st_ino)
}
