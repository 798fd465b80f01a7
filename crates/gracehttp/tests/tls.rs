//! `gracehttp::Tls`: real handshakes over loopback TCP against certificates made at test time.
//!
//! The server side is a small echo server built on `Tls::server_config`, the same configuration
//! the HTTP servers accept with. Clients trust only the test CA and never resume sessions, so
//! every handshake shows the certificate the server chose for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::{fs, io};

use gracehttp::{Error, Tls};
use rcgen::KeyPair;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use testkit::certs::{Ca, Leaf, pem_encode, sec1_from_pkcs8};
use testkit::tls::{self as tls_client, Handshake, client_config, server_config};
use testkit::{TIMEOUT, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, client};

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];
const HTTP1: &[&[u8]] = &[b"http/1.1"];

// ---------------------------------------------------------------------------------------------
// Files

/// `cert.pem` and `key.pem` in a temp dir, rewritten in place as a deploy would.
struct PemPair {
    /// Kept for its `Drop`, which removes the files.
    _dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl PemPair {
    fn new() -> PemPair {
        let dir = TempDir::new("tls").unwrap();
        PemPair {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            _dir: dir,
        }
    }

    fn with(leaf: &Leaf) -> PemPair {
        let pair = PemPair::new();
        pair.write(&leaf.cert_pem, &leaf.key_pem);
        pair
    }

    fn write(&self, cert_pem: &str, key_pem: &str) {
        fs::write(&self.cert, cert_pem).unwrap();
        fs::write(&self.key, key_pem).unwrap();
    }

    fn tls(&self) -> Tls {
        Tls::from_pem_files(&self.cert, &self.key).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Server and client

/// Accepts TLS on 127.0.0.1 with the given configuration and echoes every byte back.
/// Dropping it stops the accept loop and every connection.
struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    async fn start(config: Arc<ServerConfig>) -> EchoServer {
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Owned here so that aborting the accept loop drops (aborts) the connections too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(echo(acceptor.clone(), tcp));
            }
        });
        EchoServer { addr, task }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(acceptor: TlsAcceptor, tcp: TcpStream) {
    // A failed handshake is the client's business: it sees the alert.
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    let mut buf = [0u8; 1024];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A TLS connection to `addr` from a client that trusts only `ca` and offers `alpn` (a client
/// that never resumes a session: see `testkit::tls::client_config`).
async fn connect(addr: SocketAddr, ca: &Ca, alpn: &[&[u8]]) -> client::TlsStream<TcpStream> {
    try_connect(addr, ca, alpn).await.unwrap()
}

async fn try_connect(
    addr: SocketAddr,
    ca: &Ca,
    alpn: &[&[u8]],
) -> io::Result<client::TlsStream<TcpStream>> {
    tls_client::connect(addr, client_config(&ca.der, alpn).unwrap()).await
}

/// The leaf certificate the server presented on this connection.
fn peer_leaf(stream: &client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    Handshake::of(stream)
        .leaf
        .expect("the server sent a certificate")
}

fn alpn(stream: &client::TlsStream<TcpStream>) -> Option<&[u8]> {
    stream.get_ref().1.alpn_protocol()
}

/// Sends `msg` and expects it back: the connection is alive in both directions.
async fn round_trip(stream: &mut client::TlsStream<TcpStream>, msg: &[u8]) {
    let exchange = async {
        stream.write_all(msg).await?;
        stream.flush().await?;
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back).await?;
        io::Result::Ok(back)
    };
    let back = timeout(TIMEOUT, exchange)
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(back, msg);
}

/// A new connection's certificate.
async fn leaf_now(addr: SocketAddr, ca: &Ca) -> CertificateDer<'static> {
    let mut stream = connect(addr, ca, BOTH).await;
    round_trip(&mut stream, b"hello").await;
    peer_leaf(&stream)
}

// ---------------------------------------------------------------------------------------------
// Error checks

#[track_caller]
fn assert_file_error(result: Result<impl std::fmt::Debug, Error>, expected: &Path) {
    match result {
        Err(Error::TlsFile { path, source }) => {
            assert_eq!(path, expected);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!(
            "expected Error::TlsFile for {}, got {other:?}",
            expected.display()
        ),
    }
}

#[track_caller]
fn assert_pem_error(result: Result<impl std::fmt::Debug, Error>, expected: &Path) {
    match &result {
        Err(err @ Error::TlsPem { path, reason }) => {
            assert_eq!(path, expected);
            assert!(!reason.is_empty());
            let shown = err.to_string();
            assert!(
                shown.contains(&expected.display().to_string()),
                "{shown:?} does not name {}",
                expected.display()
            );
        }
        other => panic!(
            "expected Error::TlsPem for {}, got {other:?}",
            expected.display()
        ),
    }
}

#[track_caller]
fn assert_key_error(result: Result<impl std::fmt::Debug, Error>, pair: &PemPair) {
    match &result {
        Err(err @ Error::TlsKey { cert, key, .. }) => {
            assert_eq!(cert, &pair.cert);
            assert_eq!(key, &pair.key);
            let shown = err.to_string();
            assert!(
                shown.contains(&pair.cert.display().to_string()),
                "{shown:?}"
            );
            assert!(shown.contains(&pair.key.display().to_string()), "{shown:?}");
        }
        other => panic!("expected Error::TlsKey, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn pem_files_serve_the_leaf_and_negotiate_alpn() {
    let ca = Ca::new().unwrap();
    let leaf = ca.leaf().unwrap();
    let pair = PemPair::with(&leaf);
    let tls = pair.tls();
    assert_eq!(tls.paths(), Some((pair.cert.as_path(), pair.key.as_path())));
    let shown = format!("{tls:?}");
    assert!(
        shown.contains("cert.pem") && shown.contains("h2"),
        "{shown}"
    );
    let server = EchoServer::start(tls.server_config()).await;

    let mut both = connect(server.addr, &ca, BOTH).await;
    assert_eq!(peer_leaf(&both), leaf.der);
    assert_eq!(alpn(&both), Some(&b"h2"[..]));
    round_trip(&mut both, b"over h2").await;

    let mut http1 = connect(server.addr, &ca, HTTP1).await;
    assert_eq!(peer_leaf(&http1), leaf.der);
    assert_eq!(alpn(&http1), Some(&b"http/1.1"[..]));
    round_trip(&mut http1, b"over http/1.1").await;
}

#[tokio::test]
async fn a_certificate_file_may_hold_the_chain_and_the_key() {
    // Some deployments ship one file: leaf, intermediates, key. The certificate side must skip
    // the key, and send the whole chain.
    let ca = Ca::new().unwrap();
    let leaf = ca.leaf().unwrap();
    let dir = TempDir::new("tls-chain").unwrap();
    let combined = dir.join("combined.pem");
    let ca_pem = pem_encode("CERTIFICATE", &ca.der);
    fs::write(
        &combined,
        format!("{}{}{}", leaf.cert_pem, ca_pem, leaf.key_pem),
    )
    .unwrap();
    let tls = Tls::from_pem_files(&combined, &combined).unwrap();
    let server = EchoServer::start(tls.server_config()).await;

    let stream = connect(server.addr, &ca, BOTH).await;
    let chain = Handshake::of(&stream).chain;
    assert_eq!(chain, [leaf.der.clone(), ca.der.clone()]);
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_handshakes_only() {
    let ca = Ca::new().unwrap();
    let old = ca.leaf().unwrap();
    let new = ca.leaf().unwrap();
    assert_ne!(old.der, new.der);
    let pair = PemPair::with(&old);
    let tls = pair.tls();
    // Made before the reload, like the servers' acceptors: it must see the reload too.
    let server = EchoServer::start(tls.server_config()).await;

    let mut open = connect(server.addr, &ca, BOTH).await;
    assert_eq!(peer_leaf(&open), old.der);
    round_trip(&mut open, b"before").await;

    pair.write(&new.cert_pem, &new.key_pem);
    assert!(tls.reload().unwrap());

    let mut fresh = connect(server.addr, &ca, BOTH).await;
    assert_eq!(peer_leaf(&fresh), new.der);
    round_trip(&mut fresh, b"new").await;

    // The connection opened before the reload goes on, on the old certificate.
    round_trip(&mut open, b"after").await;
    round_trip(&mut open, b"and again").await;
    assert_eq!(peer_leaf(&open), old.der);

    // A clone shares the certificate: reloading it moves every clone.
    let newest = ca.leaf().unwrap();
    pair.write(&newest.cert_pem, &newest.key_pem);
    assert!(tls.clone().reload().unwrap());
    assert_eq!(leaf_now(server.addr, &ca).await, newest.der);
}

#[tokio::test]
async fn failed_reloads_keep_the_last_good_certificate() {
    let ca = Ca::new().unwrap();
    let good = ca.leaf().unwrap();
    let pair = PemPair::with(&good);
    let tls = pair.tls();
    let server = EchoServer::start(tls.server_config()).await;
    assert_eq!(leaf_now(server.addr, &ca).await, good.der);

    // The certificate file is gone (a deploy halfway through).
    fs::remove_file(&pair.cert).unwrap();
    assert_file_error(tls.reload(), &pair.cert);
    assert_eq!(leaf_now(server.addr, &ca).await, good.der);

    // The certificate file holds no PEM at all.
    fs::write(&pair.cert, "this is not a certificate\n").unwrap();
    assert_pem_error(tls.reload(), &pair.cert);
    assert_eq!(leaf_now(server.addr, &ca).await, good.der);

    // A PEM section that is not base64.
    fs::write(
        &pair.cert,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert_pem_error(tls.reload(), &pair.cert);
    assert_eq!(leaf_now(server.addr, &ca).await, good.der);

    // A new certificate next to the key of another one.
    let other = ca.leaf().unwrap();
    let new = ca.leaf().unwrap();
    pair.write(&new.cert_pem, &other.key_pem);
    assert_key_error(tls.reload(), &pair);
    assert_eq!(leaf_now(server.addr, &ca).await, good.der);

    // The key file is gone.
    fs::write(&pair.cert, &new.cert_pem).unwrap();
    fs::remove_file(&pair.key).unwrap();
    assert_file_error(tls.reload(), &pair.key);
    assert_eq!(leaf_now(server.addr, &ca).await, good.der);

    // Fixed: the next reload works.
    pair.write(&new.cert_pem, &new.key_pem);
    assert!(tls.reload().unwrap());
    assert_eq!(leaf_now(server.addr, &ca).await, new.der);
}

#[test]
fn from_pem_files_errors_name_the_file() {
    let ca = Ca::new().unwrap();
    let leaf = ca.leaf().unwrap();

    // Missing certificate file, then missing key file.
    let pair = PemPair::new();
    fs::write(&pair.key, &leaf.key_pem).unwrap();
    assert_file_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair.cert);
    fs::write(&pair.cert, &leaf.cert_pem).unwrap();
    fs::remove_file(&pair.key).unwrap();
    assert_file_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair.key);

    // Empty certificate file.
    pair.write("", &leaf.key_pem);
    assert_pem_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair.cert);

    // Empty key file.
    pair.write(&leaf.cert_pem, "");
    assert_pem_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair.key);

    // A key file that holds only a certificate (the two paths swapped in a config, say).
    pair.write(&leaf.cert_pem, &leaf.cert_pem);
    assert_pem_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair.key);

    // A certificate section whose content is not a certificate.
    pair.write(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        &leaf.key_pem,
    );
    assert_pem_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair.cert);

    // A certificate section with no end.
    pair.write("-----BEGIN CERTIFICATE-----\nAAAA\n", &leaf.key_pem);
    assert_pem_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair.cert);

    // The key of another certificate.
    pair.write(&leaf.cert_pem, &ca.leaf().unwrap().key_pem);
    assert_key_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair);

    // A private key section whose content no provider can load.
    pair.write(
        &leaf.cert_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    assert_key_error(Tls::from_pem_files(&pair.cert, &pair.key), &pair);

    // And with everything right, it works.
    pair.write(&leaf.cert_pem, &leaf.key_pem);
    assert!(Tls::from_pem_files(&pair.cert, &pair.key).is_ok());
}

#[tokio::test]
async fn from_config_fills_in_alpn_only_when_empty() {
    let ca = Ca::new().unwrap();
    let leaf = ca.leaf().unwrap();
    // The user's own configuration, built as a user would.
    let user_config = |alpn: &[&[u8]]| server_config(&leaf, alpn).unwrap();

    // No ALPN from the user: h2 and http/1.1 are offered.
    let empty = user_config(&[]);
    let tls = Tls::from_config(Arc::clone(&empty));
    assert!(
        empty.alpn_protocols.is_empty(),
        "the user's config is not changed"
    );
    assert_eq!(
        tls.server_config().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(tls.paths(), None);
    assert!(!tls.reload().unwrap());
    let server = EchoServer::start(tls.server_config()).await;
    let mut stream = connect(server.addr, &ca, BOTH).await;
    assert_eq!(alpn(&stream), Some(&b"h2"[..]));
    assert_eq!(peer_leaf(&stream), leaf.der);
    round_trip(&mut stream, b"user config").await;

    // The user's own choice stands, and their config is used as it is.
    let http1_only = user_config(HTTP1);
    let tls = Tls::from_config(Arc::clone(&http1_only));
    assert!(Arc::ptr_eq(&tls.server_config(), &http1_only));
    assert!(!tls.reload().unwrap());
    let server = EchoServer::start(tls.server_config()).await;
    let stream = connect(server.addr, &ca, BOTH).await;
    assert_eq!(alpn(&stream), Some(&b"http/1.1"[..]));
    // And a client that offers only h2 gets no HTTP/2 from it: rustls refuses the handshake
    // (at once: not a handshake that never ends).
    let refused = try_connect(server.addr, &ca, &[b"h2"]).await.map(drop);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::TimedOut),
        "{refused:?}"
    );
}

#[tokio::test]
async fn sec1_ec_key() {
    let ca = Ca::new().unwrap();
    let leaf = ca.leaf().unwrap();
    let sec1 = pem_encode(
        "EC PRIVATE KEY",
        &sec1_from_pkcs8(leaf.key.serialized_der()).unwrap(),
    );
    let pair = PemPair::new();
    pair.write(&leaf.cert_pem, &sec1);
    let tls = pair.tls();
    let server = EchoServer::start(tls.server_config()).await;
    assert_eq!(leaf_now(server.addr, &ca).await, leaf.der);

    // And a reload to a SEC1 key works as well.
    let next = ca.leaf().unwrap();
    let sec1 = pem_encode(
        "EC PRIVATE KEY",
        &sec1_from_pkcs8(next.key.serialized_der()).unwrap(),
    );
    pair.write(&next.cert_pem, &sec1);
    assert!(tls.reload().unwrap());
    assert_eq!(leaf_now(server.addr, &ca).await, next.der);
}

#[tokio::test]
async fn pkcs1_rsa_key() {
    // ring cannot generate RSA keys, so the openssl command line makes one.
    let dir = TempDir::new("tls-rsa").unwrap();
    let pkcs8 = dir.join("rsa-pkcs8.pem");
    let pkcs1 = dir.join("rsa-pkcs1.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path_str(&pkcs8),
    ]);
    // OpenSSL 3 writes PKCS#8 unless told `-traditional`; older versions and LibreSSL write
    // PKCS#1 and do not know the flag.
    let to_pkcs1 = ["rsa", "-in", path_str(&pkcs8), "-out", path_str(&pkcs1)];
    if !try_openssl(&[&to_pkcs1[..], &["-traditional"]].concat()) {
        openssl(&to_pkcs1);
    }
    let pkcs1_pem = fs::read_to_string(&pkcs1).unwrap();
    assert!(
        pkcs1_pem.contains("-----BEGIN RSA PRIVATE KEY-----"),
        "openssl did not write PKCS#1: {pkcs1_pem}"
    );

    let ca = Ca::new().unwrap();
    let key = KeyPair::from_pem(&fs::read_to_string(&pkcs8).unwrap()).unwrap();
    let leaf = ca.leaf_with_key(key).unwrap();
    let pair = PemPair::new();
    pair.write(&leaf.cert_pem, &pkcs1_pem);
    let tls = pair.tls();
    let server = EchoServer::start(tls.server_config()).await;
    assert_eq!(leaf_now(server.addr, &ca).await, leaf.der);

    // An RSA certificate with an EC key is refused, by the key check.
    pair.write(&leaf.cert_pem, &ca.leaf().unwrap().key_pem);
    assert_key_error(tls.reload(), &pair);
    assert_eq!(leaf_now(server.addr, &ca).await, leaf.der);
}

// ---------------------------------------------------------------------------------------------
// openssl

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn try_openssl(args: &[&str]) -> bool {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command is needed to make an RSA key for this test");
    output.status.success()
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command is needed to make an RSA key for this test");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
