//! An in-tree HTTP/2 load client that behaves as production HTTP/2 clients do (hyper-util's
//! pooled client, browsers, Go's net/http) when a server drains.
//!
//! Why it exists: a draining server sends GOAWAY, finishes the streams it took and closes the
//! connection. A request a client issues on that connection in the meantime is either never
//! sent (hyper drops it, the connection is closing) or refused by the GOAWAY's last stream id;
//! in both cases the server did not process it, and RFC 9113 (section 8.7, "Request
//! Reliability") lets the client send it again on a new connection, which real clients do.
//! oha cannot express that retry (its HTTP/2 workers do not check the connection before a
//! request, and it fails such requests like any other), so on its own it cannot tell a request
//! the protocol refused from one the server lost. This client can: it checks the connection
//! before each request, opens a new one when the old one is closing, retries a request only
//! when the protocol says the server did not process it (`retry.rs`), and counts everything
//! else as lost.
//!
//! - `retry.rs`: what a failed attempt says, by RFC 9113: never sent, refused unprocessed, or
//!   lost;
//! - `pool.rs`: the connections (h2c with prior knowledge, or TLS with h2 through ALPN) and
//!   one request with its retries;
//! - `run.rs`: the fixed-rate schedule on a thread of its own, and the figures.

mod pool;
mod retry;
mod run;
#[cfg(test)]
mod script;

pub(crate) use run::{CONNS, H2Load, H2Stats, Plan, RATE, STREAMS};
