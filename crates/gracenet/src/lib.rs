//! Inherit, rebuild and hand over listening sockets, for zero-downtime binary upgrades.
//!
//! A server creates one [`Net`] early in `main` and asks it for its listeners instead of
//! binding them itself. When the server was started by a previous version of itself (or by
//! systemd socket activation), it gets the very same sockets back, so no connection is refused
//! while one process replaces another. When it is time to upgrade, [`Net::upgrade`] starts the
//! new binary with every socket on descriptors 3.., following sd_listen_fds(3), and waits until
//! the new process calls [`Net::ready`]. The old process then stops accepting, finishes what it
//! started, and exits.
//!
//! This crate is synchronous and knows nothing of async runtimes: every socket comes back as a
//! nonblocking `std` type, ready for `tokio::net::TcpListener::from_std` and friends.
//!
//! # Example
//!
//! ```no_run
//! use std::io::{Read, Write};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Before any other thread starts, so the protocol's variables can be removed from the
//!     // environment that subprocesses would inherit.
//!     let net = gracenet::Net::from_env()?;
//!     let listener = net.listen_tcp("127.0.0.1:7000".parse()?)?;
//!     listener.set_nonblocking(false)?; // this sketch accepts in blocking mode
//!     net.ready()?;
//!
//!     // ...on SIGUSR2, elsewhere:
//!     match net.upgrade() {
//!         Ok(pid) => eprintln!("pid {pid} serves now; draining"),
//!         Err(e) => eprintln!("upgrade failed, still serving: {e}"),
//!     }
//!     # let _ = listener;
//!     Ok(())
//! }
//! ```
//!
//! (Never switch a socket that other processes share to blocking mode in a real server:
//! `O_NONBLOCK` belongs to the socket, not to the process. The example keeps it short.)
//!
//! # The protocol
//!
//! The new process gets `LISTEN_FDS=N`, `LISTEN_PID=<its own pid>` and
//! `LISTEN_FDNAMES=a:b:...` exactly as systemd sets them, so any systemd-aware program can be
//! the new version. One more descriptor, after the sockets and named by `GRACENET_READY_FD`,
//! is a pipe: the new process writes `READY=1\n` to it once it serves. `GRACENET_GENERATION`
//! counts the handovers.

mod endpoint;
mod env;
mod error;
mod exe;
mod net;
pub mod notify;
mod pidfile;
mod spawn;
mod sys;

pub use endpoint::{Endpoint, Kind, ParseEndpointError};
pub use env::{GENERATION, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID, READY_FD};
pub use error::Error;
pub use net::{
    Builder, Child, DEFAULT_BACKLOG, DEFAULT_READY_TIMEOUT, Listener, Net, SocketInfo,
    scrub_command,
};
pub use sys::socket_inode;
