//! TLS for the tests: a rustls client configuration that trusts only the test CA and never
//! resumes a session, a handshake with a server on loopback and what it showed, and a server
//! configuration for a leaf.
//!
//! The crypto provider is *ring*, given explicitly (never the process-wide default), like every
//! configuration gracehttp builds. Resumption is off: a resumed session shows the certificate of
//! the session it resumes, not the one the server would choose now, and the tests check that.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::certs::Leaf;
use crate::wait::{TIMEOUT, io_within};

/// The name the clients ask for: the test leaves are made for it (and for 127.0.0.1).
pub const SERVER_NAME: &str = "localhost";

/// A client configuration that trusts only `ca`, offers `alpn` (in order of preference), and
/// never resumes a session, so that every handshake shows the certificate the server chose for
/// it.
///
/// # Errors
///
/// When `ca` is not a certificate rustls accepts as a root.
pub fn client_config(
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// A server configuration serving `leaf` (with its key) and offering `alpn`, for a test's own
/// TLS server or a user's configuration handed to the library under test.
///
/// # Errors
///
/// When rustls refuses the certificate or the key.
pub fn server_config(leaf: &Leaf, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, rustls::Error> {
    let key = PrivatePkcs8KeyDer::from(leaf.key.serialize_der());
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone()], key.into())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Connects to `addr` and completes a TLS handshake for [`SERVER_NAME`], within [`TIMEOUT`].
///
/// # Errors
///
/// When the connection or the handshake fails (a certificate the configuration does not trust,
/// no protocol in common), or takes longer than [`TIMEOUT`] (`TimedOut`).
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    io_within(TIMEOUT, "TLS handshake", async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
        TlsConnector::from(config).connect(name, tcp).await
    })
    .await
}

/// What a TLS handshake showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The leaf certificate the server sent.
    pub leaf: Option<CertificateDer<'static>>,
    /// Every certificate the server sent, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The protocol chosen by ALPN.
    pub alpn: Option<Vec<u8>>,
}

impl Handshake {
    /// What the handshake of `stream` showed.
    pub fn of(stream: &TlsStream<TcpStream>) -> Handshake {
        let (_, conn) = stream.get_ref();
        let chain: Vec<CertificateDer<'static>> = conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect();
        Handshake {
            leaf: chain.first().cloned(),
            chain,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::certs::Ca;

    /// Accepts one TLS connection with `leaf`, offering only h2; returns the address and the
    /// handshake's outcome.
    async fn serve_once(leaf: &Leaf) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
        let server = server_config(leaf, &[b"h2"]).unwrap();
        let acceptor = TlsAcceptor::from(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            acceptor.accept(tcp).await.map(drop)
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_handshake_shows_the_leaf_and_the_protocol() {
        let ca = Ca::new().unwrap();
        let leaf = ca.leaf().unwrap();
        let (addr, accepted) = serve_once(&leaf).await;
        let config = client_config(&ca.der, &[b"http/1.1", b"h2"]).unwrap();
        let stream = connect(addr, config).await.unwrap();
        let shown = Handshake::of(&stream);
        assert_eq!(shown.leaf.as_ref(), Some(&leaf.der));
        assert_eq!(shown.chain, std::slice::from_ref(&leaf.der));
        assert_eq!(shown.alpn.as_deref(), Some(&b"h2"[..]));
        accepted.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_trusting_another_ca_refuses_the_server() {
        let leaf = Ca::new().unwrap().leaf().unwrap();
        let (addr, accepted) = serve_once(&leaf).await;
        let other = Ca::new().unwrap();
        let refused = connect(addr, client_config(&other.der, &[b"h2"]).unwrap()).await;
        assert_eq!(
            refused.map(drop).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
        assert!(accepted.await.unwrap().is_err());
    }
}
