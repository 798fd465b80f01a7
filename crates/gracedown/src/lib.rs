//! Drain any tokio server's connections: stop accepting, count, tell connections to finish,
//! force-close what is left after a deadline.
//!
//! `gracedown` knows nothing of HTTP or of file descriptors. It works with any listener that
//! accepts (tokio's `TcpListener` and `UnixListener`, or your own accept function, see
//! [`Accept`]) and any connection type (TCP, unix, TLS streams). It is what lets a process stop
//! accepting and finish what it started, for instance after handing its listening sockets to
//! its new version.
//!
//! * [`Drain`] is the shared state: a [`TrackedListener`] accepts through it, each accepted
//!   connection comes wrapped in a [`Tracked`] that holds a guard, and the [`Counters`] are
//!   readable at any time (atomics only).
//! * [`Drain::drain`] stops every listener (dropping this process's copy of the socket, never
//!   shutting it down for the other processes that share it), completes every
//!   [`drained`](Drain::drained) future, and closes the connections marked idle at once.
//! * [`Drain::shutdown`] drains, waits for connections to finish up to the stop timeout,
//!   force-closes the rest, waits up to the kill timeout, and returns a [`Summary`].
//!
//! # Example
//!
//! An echo server that stops gracefully on Ctrl-C:
//!
//! ```no_run
//! use gracedown::{Drain, StopTimeouts};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let drain = Drain::new();
//!     let mut listener = drain.track_listener(tokio::net::TcpListener::bind("127.0.0.1:7000").await?);
//!
//!     let stopper = drain.clone();
//!     tokio::spawn(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         let summary = stopper.shutdown(StopTimeouts::default()).await;
//!         eprintln!("stopped: {summary:?}");
//!         std::process::exit(0);
//!     });
//!
//!     // `accept` returns `None` once the drain has started.
//!     while let Some(accepted) = listener.accept().await {
//!         let Ok((conn, _peer)) = accepted else { continue };
//!         // `spawn` attaches the task to the connection, so a force-close can abort it.
//!         conn.spawn(|mut conn| async move {
//!             let mut drained = std::pin::pin!(conn.drained());
//!             let mut buf = [0; 1024];
//!             loop {
//!                 // Nothing in progress while we wait for a message: the drain may close
//!                 // the connection right away instead of waiting for it.
//!                 conn.mark_idle();
//!                 let n = tokio::select! {
//!                     read = conn.read(&mut buf) => match read { Ok(0) | Err(_) => return, Ok(n) => n },
//!                     () = &mut drained => return, // a protocol would say goodbye here
//!                 };
//!                 if !conn.mark_busy() { return } // the drain closed us meanwhile
//!                 if conn.write_all(&buf[..n]).await.is_err() { return }
//!             }
//!         });
//!     }
//!     std::future::pending().await
//! }
//! ```
//!
//! # Counting
//!
//! A connection counts as active from the moment it is tracked until its [`Tracked`] is
//! dropped, however that happens: the guard's `Drop` does the counting, so a connection whose
//! task returned, errored, was aborted or panicked is counted as ended all the same. The
//! per-connection path takes no lock for counting; see [`Counters`] for what each counter means.
//!
//! # Closing
//!
//! A connection is closed by the drain (marked idle when the drain starts, or still open at the
//! stop deadline) in two ways at once: its task, if started with [`Tracked::spawn`], is aborted,
//! which drops the socket whatever the task was awaiting; and its reads and writes end from then
//! on, waking whatever is parked on them. A task stuck without yielding, or a connection held
//! outside its task, cannot be reached and is reported as [`Summary::stuck`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The modules, from the bottom up: each imports from the crate only what is declared before it,
// so the imports form no cycle.

// The drain-wide phase and counters.
mod state;

// The sharded set of open connections, generic over what it holds.
mod registry;

// What the drain reaches of one connection: flags, attached task, parked wakers.
mod conn_state;

// The `Drain` façade.
mod drain;

// `Tracked`, its guard and `ConnHandle`, and `Drain::track`.
mod conn;

// `TrackedListener` and `Drain::track_listener`.
mod listener;

// `Drain::shutdown` and its deadlines.
mod shutdown;

pub use conn::{ConnHandle, Tracked};
pub use drain::{Counters, Drain};
pub use listener::{Accept, AcceptFn, TrackedListener, accept_fn};
pub use shutdown::{DEFAULT_KILL_TIMEOUT, DEFAULT_STOP_TIMEOUT, StopTimeouts, Summary};
