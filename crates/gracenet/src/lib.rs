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
//!     // Nonblocking, and it must stay so: `O_NONBLOCK` belongs to the socket, which the next
//!     // process shares. Hand it to an async runtime (`tokio::net::TcpListener::from_std`).
//!     let listener = net.listen_tcp("127.0.0.1:7000".parse()?)?;
//!     net.ready()?;
//!
//!     // ...serve `listener` in a runtime; on SIGUSR2 (blocking: use spawn_blocking):
//!     match net.upgrade() {
//!         Ok(pid) => eprintln!("pid {pid} serves now; stop accepting, drain, exit"),
//!         Err(e) => eprintln!("upgrade failed, still serving: {e}"),
//!     }
//!     # drop(listener);
//!     Ok(())
//! }
//! ```
//!
//! # The protocol
//!
//! The new process gets `LISTEN_FDS=N`, `LISTEN_PID=<its own pid>` and
//! `LISTEN_FDNAMES=a:b:...` exactly as systemd sets them, so any systemd-aware program can be
//! the new version. One more descriptor, after the sockets and named by `GRACENET_READY_FD`,
//! is a pipe: the new process writes `READY=1\n` to it once it serves. `GRACENET_GENERATION`
//! counts the handovers, and `GRACENET_SOCKET_FILES` names the unix sockets whose files this
//! library created (so the last process removes them on a final stop, and leaves systemd's).
//! `GRACENET_BOUND` says which of the sockets a process of this library bound itself, so that
//! no other program holds them: the last process seals those on a final stop (see
//! [`Net::close`]).

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accept_error;
mod bind;
mod builder;
mod endpoint;
mod env;
mod error;
mod exe;
mod final_stop;
mod inherit;
mod listen;
mod net;
pub mod notify;
mod pidfile;
mod ready;
// The only modules with unsafe code (ARCHITECTURE.md): system calls on raw descriptors, and
// starting the new process.
#[allow(unsafe_code)]
mod spawn;
#[allow(unsafe_code)]
mod sys;
mod upgrade;

pub use accept_error::is_connection_error;
pub use builder::{Builder, DEFAULT_BACKLOG, DEFAULT_READY_TIMEOUT};
pub use endpoint::{Endpoint, Kind, ParseEndpointError};
pub use env::{BOUND, GENERATION, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID, READY_FD, SOCKET_FILES};
pub use error::Error;
pub use final_stop::{LINGER_MAX, LINGER_QUIET, Linger, Queued, StreamListener, take_queued};
pub use inherit::scrub_command;
pub use listen::{Listener, SocketInfo};
pub use net::Net;
pub use upgrade::Child;
