//! Fresh sockets, for requests nothing inherited matches.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::Endpoint;

/// Binds a fresh socket for `endpoint` (relative unix paths against `cwd`), listening with
/// `backlog` when it is a stream socket, nonblocking and close-on-exec.
///
/// TCP sockets get `SO_REUSEADDR` (a restart finds its port in `TIME_WAIT`), never
/// `SO_REUSEPORT`: closing one of two reuseport sockets resets the connections queued on it.
pub(crate) fn fresh(endpoint: &Endpoint, cwd: &Path, backlog: i32) -> io::Result<Socket> {
    let socket = match endpoint {
        Endpoint::Tcp(addr) => {
            let s = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            s.set_reuse_address(true)?;
            s.bind(&(*addr).into())?;
            s.listen(backlog)?;
            s
        }
        Endpoint::Udp(addr) => {
            let s = Socket::new(Domain::for_address(*addr), Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&(*addr).into())?;
            s
        }
        Endpoint::Unix(path) => {
            let path = cwd.join(path);
            remove_stale_socket(&path)?;
            unix_listener(&SockAddr::unix(&path)?, backlog)?
        }
        Endpoint::UnixAbstract(name) => {
            let mut bytes = Vec::with_capacity(name.len() + 1);
            bytes.push(0);
            bytes.extend_from_slice(name);
            unix_listener(&SockAddr::unix(OsStr::from_bytes(&bytes))?, backlog)?
        }
    };
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn unix_listener(addr: &SockAddr, backlog: i32) -> io::Result<Socket> {
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.bind(addr)?;
    s.listen(backlog)?;
    Ok(s)
}

/// Makes a stream socket listen if it does not yet: systemd and our parents hand over
/// listening sockets, but a program handing over a bound, idle one still gets a listener.
pub(crate) fn ensure_listening(socket: &Socket, backlog: i32) -> io::Result<()> {
    if !socket.is_listener()? {
        socket.listen(backlog)?;
    }
    Ok(())
}

/// A unix socket file left behind by a process that is gone blocks `bind`. It is replaced
/// only when nothing accepts on it; a live listener is an `AddrInUse` error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process listens on this socket",
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path),
            Err(_) => Ok(()),
        },
        _ => Ok(()),
    }
}
