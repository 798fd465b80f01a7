//! What one server is: a name, where it listens, what it answers with, and optional TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gracenet::Endpoint;

use crate::{Handler, Tls};

/// One server: a listening socket, a service, optional TLS, and a name.
///
/// The name identifies the socket across a handover (it is the socket's name in
/// `LISTEN_FDNAMES`, and a systemd `.socket` unit can hand the socket over under it with
/// `FileDescriptorName=`), and labels the server's metrics. Names must be unique, and may hold
/// printable ASCII except `:`.
#[derive(Debug, Clone)]
pub struct Server {
    pub(crate) name: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) handler: Handler,
    pub(crate) tls: Option<Tls>,
}

impl Server {
    /// A server on a TCP address (HTTP/1.1 and h2c, or HTTPS with [`tls`](Server::tls)).
    pub fn tcp(name: impl Into<String>, addr: SocketAddr, handler: Handler) -> Server {
        Server::new(name, Endpoint::Tcp(addr), handler)
    }

    /// A server on a unix socket path.
    pub fn unix(name: impl Into<String>, path: impl Into<PathBuf>, handler: Handler) -> Server {
        Server::new(name, Endpoint::Unix(path.into()), handler)
    }

    /// A server on any stream endpoint gracenet can listen on.
    pub fn new(name: impl Into<String>, endpoint: Endpoint, handler: Handler) -> Server {
        Server {
            name: name.into(),
            endpoint,
            handler,
            tls: None,
        }
    }

    /// Serves TLS (HTTPS, with h2 by ALPN) on this server.
    pub fn tls(mut self, tls: Tls) -> Server {
        self.tls = Some(tls);
        self
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Timeouts that protect a server, and its drain, from slow or silent clients.
///
/// `None` disables one. Defaults: [`DEFAULT_TLS_HANDSHAKE`](Timeouts::DEFAULT_TLS_HANDSHAKE),
/// [`DEFAULT_HEADER_READ`](Timeouts::DEFAULT_HEADER_READ), [`DEFAULT_IDLE`](Timeouts::DEFAULT_IDLE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub(crate) tls_handshake: Option<Duration>,
    pub(crate) header_read: Option<Duration>,
    pub(crate) idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tls_handshake: Some(Self::DEFAULT_TLS_HANDSHAKE),
            header_read: Some(Self::DEFAULT_HEADER_READ),
            idle: Some(Self::DEFAULT_IDLE),
        }
    }
}

impl Timeouts {
    /// Default for the TLS handshake: 10 s.
    pub const DEFAULT_TLS_HANDSHAKE: Duration = Duration::from_secs(10);
    /// Default for reading a request's headers (slowloris): 10 s.
    pub const DEFAULT_HEADER_READ: Duration = Duration::from_secs(10);
    /// Default for an idle keep-alive connection: 60 s.
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);

    /// How long a TLS handshake may take.
    pub fn tls_handshake(mut self, limit: Option<Duration>) -> Self {
        self.tls_handshake = limit;
        self
    }

    /// How long a client may take to send a request's headers: from the start of the
    /// connection (after the TLS handshake) for the first request, and for HTTP/1.1 also from
    /// the end of each response to the headers of the next one.
    pub fn header_read(mut self, limit: Option<Duration>) -> Self {
        self.header_read = limit;
        self
    }

    /// How long a connection may stay idle between requests before it is closed.
    ///
    /// For HTTP/1.1 the header read timeout applies between requests too (hyper starts its
    /// header timer as soon as it waits for the next request), so a kept-alive HTTP/1.1
    /// connection is closed after the shorter of the two; this one then matters for HTTP/2.
    pub fn idle(mut self, limit: Option<Duration>) -> Self {
        self.idle = limit;
        self
    }
}
