//! Taking what the environment hands to this process: the sockets on fds 3.. and the readiness
//! pipe, checked and adopted, and the protocol's variables removed.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use socket2::Socket;

use crate::env::{self, Handed};
use crate::{Error, SocketInfo, sys};

/// An inherited socket that nothing has claimed yet.
#[derive(Debug)]
pub(crate) struct Inherited {
    pub(crate) socket: Socket,
    /// Named as in `LISTEN_FDNAMES` (`unknown` when none was given); `bound` when a
    /// predecessor of this library bound it (`GRACENET_BOUND`).
    pub(crate) info: SocketInfo,
}

/// What this process inherited.
#[derive(Debug, Default)]
pub(crate) struct Inheritance {
    pub(crate) sockets: Vec<Inherited>,
    /// The write end of the readiness pipe, when a parent of this library waits for us.
    pub(crate) ready_pipe: Option<OwnedFd>,
    pub(crate) generation: u64,
    /// Names of inherited unix sockets whose files a predecessor created.
    pub(crate) socket_files: Vec<String>,
    /// `LISTEN_PID` named another process: the variables were left over, not meant for us.
    pub(crate) foreign_pid: Option<u32>,
}

/// Takes what the environment hands to this process (`sys::adopt_inherited`) and makes each
/// socket ready for use.
pub(crate) fn from_env() -> Result<Inheritance, Error> {
    let (handed, owned) = sys::adopt_inherited()?;
    let mut inheritance = Inheritance {
        generation: handed.generation,
        socket_files: handed.socket_files.clone(),
        foreign_pid: handed.foreign_pid,
        ..Inheritance::default()
    };
    // None: another `Net` in this process owns them already.
    let Some((sockets, ready)) = owned else {
        return Ok(inheritance);
    };
    // Only a parent of this library says which sockets it bound; without one, an inherited
    // socket may be held by whoever handed it in.
    let has_parent = ready.is_some();
    for (position, (fd, (_, name))) in sockets.into_iter().zip(&handed.fds).enumerate() {
        let bound = has_parent && handed.bound.contains(&position);
        inheritance.sockets.push(prepare(fd, name.clone(), bound)?);
    }
    inheritance.ready_pipe = ready
        .map(|fd| prepare_ready_pipe(fd, &handed))
        .transpose()?;
    Ok(inheritance)
}

/// Makes an adopted socket ready for use: close-on-exec, nonblocking, kind and address known.
fn prepare(fd: OwnedFd, name: String, bound: bool) -> Result<Inherited, Error> {
    let raw = fd.as_raw_fd();
    let err = |source: io::Error| Error::Inherit {
        fd: raw,
        name: name.clone(),
        source,
    };
    sys::set_cloexec(&fd).map_err(err)?;
    let socket = Socket::from(fd);
    // O_NONBLOCK belongs to the open socket, shared with every other process that holds
    // it. It is only ever switched on (tokio needs it), never off.
    socket.set_nonblocking(true).map_err(err)?;
    let (kind, endpoint) = sys::inspect(&socket).map_err(err)?;
    let info = SocketInfo {
        name,
        kind,
        endpoint,
        inherited: true,
        bound,
    };
    Ok(Inherited { socket, info })
}

fn prepare_ready_pipe(fd: OwnedFd, handed: &Handed) -> Result<OwnedFd, Error> {
    let bad = |reason: String| Error::InvalidEnv {
        var: env::READY_FD,
        value: handed.ready_fd.map(|f| f.to_string()).unwrap_or_default(),
        reason,
    };
    sys::set_cloexec(&fd).map_err(|e| bad(e.to_string()))?;
    if !sys::is_fifo(&fd).map_err(|e| bad(e.to_string()))? {
        return Err(bad("not a pipe".into()));
    }
    Ok(fd)
}

/// Removes the handover protocol's variables (`LISTEN_*`, `GRACENET_*`) from a command's
/// environment, for programs that start subprocesses while the variables are still set.
///
/// [`Net::from_env`](crate::Net::from_env) removes them from the process's own environment
/// when the process has a single thread (changing the environment is unsound otherwise);
/// created later, it leaves them, and this keeps them from reaching a subprocess.
pub fn scrub_command(cmd: &mut Command) -> &mut Command {
    for var in env::ALL {
        cmd.env_remove(var);
    }
    cmd
}
