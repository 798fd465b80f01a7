//! HTTP/1.1, HTTP/2 and TLS servers that upgrade, stop and reload by signal without losing a
//! request.
//!
//! `gracehttp` composes [`gracenet`] (sockets that survive a binary upgrade) and
//! [`gracedown`] (draining) into a server runner for hyper and tower services, axum's
//! `Router` included. Any number of servers run at once, each with its own address (or
//! inherited socket), service, optional TLS and name.
//!
//! - `SIGUSR2` (or [`Handle::upgrade`]): the binary at the same path starts with the same
//!   sockets; once it reports ready, this process stops accepting, drains and exits. If the new
//!   binary fails in any way, this process keeps serving as if nothing happened.
//! - `SIGTERM`/`SIGINT` (or [`Handle::stop`]): graceful stop with the stop and kill timeouts; a
//!   second `SIGINT` forces.
//! - `SIGHUP` (or [`Handle::reload_tls`]): certificates and keys are read again from their PEM
//!   files; a reload that fails keeps the old certificate.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use gracehttp::{Grace, Handler, Outcome, Server, full};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Before the runtime starts: gracenet adopts inherited sockets and cleans the
//!     // environment while the process has a single thread.
//!     let net = Arc::new(gracenet::Net::from_env()?);
//!     let runtime = tokio::runtime::Runtime::new()?;
//!     let outcome = runtime.block_on(async {
//!         let hello = Handler::from_fn(|_req| async { http::Response::new(full("hello\n")) });
//!         let grace = Grace::new(net).server(Server::tcp("web", "127.0.0.1:8080".parse()?, hello));
//!         let handle = grace.handle();
//!         let admin = Server::tcp("admin", "127.0.0.1:8081".parse()?, gracehttp::admin(handle));
//!         Ok::<_, Box<dyn std::error::Error>>(grace.server(admin).run().await?)
//!     })?;
//!     match outcome {
//!         Outcome::HandedOver { pid, .. } => eprintln!("pid {pid} serves now"),
//!         _ => eprintln!("stopped"),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Draining
//!
//! When this process stops accepting, an HTTP/1.1 response in flight gets `Connection: close`;
//! a keep-alive connection with nothing in flight is closed once it has been idle for
//! [`DRAIN_MIN_IDLE`] (a request already on the wire is answered, not reset), and within
//! [`DRAIN_MAX_IDLE_WAIT`] in any case; HTTP/2 connections get GOAWAY and their open streams
//! finish. TLS handshakes and header reads keep their [`Timeouts`]. Connections still open at
//! the stop timeout (upgraded WebSockets, long streams) are force-closed. Handlers can watch
//! for the drain through the [`gracedown::ConnHandle`] in each request's extensions.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accept;
mod admin;
mod conn;
mod drains;
mod error;
mod event;
mod grace;
mod handle;
mod metrics;
mod runner;
mod server;
mod service;
mod start;
mod tls;

pub use admin::admin;
pub use conn::{DRAIN_MAX_IDLE_WAIT, DRAIN_MIN_IDLE};
pub use error::Error;
pub use event::Event;
pub use grace::{Grace, Outcome};
pub use gracedown::{self, StopTimeouts};
pub use gracenet;
pub use handle::Handle;
pub use server::{Server, Timeouts};
pub use service::{Body, BoxError, Handler, full};
pub use tls::Tls;
