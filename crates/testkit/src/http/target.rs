//! Where a client connects: a loopback address, plain or with a TLS configuration, and the
//! stream it gets there.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::error::BoxError;
use crate::tls::{self, Handshake};
use crate::wait::{TIMEOUT, io_within};

/// Where to connect, and with which TLS configuration (`None`: plain TCP).
#[derive(Clone, Debug)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
}

/// A client stream: TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Target {
    /// Plain TCP to `addr`.
    pub fn plain(addr: SocketAddr) -> Target {
        Target { addr, tls: None }
    }

    /// TLS to `addr` with `config` (see [`tls::client_config`]).
    pub fn tls(addr: SocketAddr, config: Arc<ClientConfig>) -> Target {
        Target {
            addr,
            tls: Some(config),
        }
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Connects, and for TLS completes the handshake; each within [`TIMEOUT`]. A plain
    /// connection shows an empty [`Handshake`].
    ///
    /// # Errors
    ///
    /// When the connection or the handshake fails or takes too long.
    pub async fn connect(&self) -> Result<(Box<dyn Stream>, Handshake), BoxError> {
        let Some(config) = &self.tls else {
            let tcp = io_within(TIMEOUT, "connect", TcpStream::connect(self.addr)).await?;
            tcp.set_nodelay(true)?;
            return Ok((Box::new(tcp), Handshake::default()));
        };
        let stream = tls::connect(self.addr, Arc::clone(config)).await?;
        let shown = Handshake::of(&stream);
        Ok((Box::new(stream), shown))
    }
}
