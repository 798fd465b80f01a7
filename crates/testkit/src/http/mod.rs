//! The loopback HTTP clients of the tests.
//!
//! - `raw.rs`, `wire.rs`: a hand-written HTTP/1.1 client that shows exactly what the server
//!   sent and how the connection ended, and its I/O-free response parser;
//! - `target.rs`, `conn.rs`: hyper's HTTP/1.1 and HTTP/2 clients, plain or over TLS, for
//!   connections held across a restart;
//! - `error.rs`, `pid.rs`: telling a reset from a close; the pid a body names.
//!
//! Every operation returns its error (none panics on what the network or the system does), and
//! every one is bounded by [`TIMEOUT`](crate::TIMEOUT).

mod conn;
mod error;
mod pid;
mod raw;
mod target;
mod wire;

pub use conn::{H1, H2, Reply, get_once, trickle};
pub use error::{BoxError, is_reset};
pub use pid::pid_in_body;
pub use raw::{Ending, RawClient};
pub use target::{Stream, Target};
pub use wire::{Response, parse_response};
