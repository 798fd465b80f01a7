//! TLS for a server: either the user's own rustls configuration, or a certificate and key read
//! from PEM files that `SIGHUP` (or [`Tls::reload`]) reloads without a restart.
//!
//! The reload works through a certificate resolver rather than by swapping whole configurations:
//! the [`rustls::ServerConfig`] (and so the [`tokio_rustls::TlsAcceptor`] built from it) is made
//! once, and every new handshake asks the resolver for the current certificate. A handshake
//! already past that point, and every open connection, keeps the certificate it started with.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};

use crate::Error;

/// The ALPN protocols offered when the user did not choose any: HTTP/2 first, so that clients
/// that speak both get HTTP/2, then HTTP/1.1.
const DEFAULT_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS for one server: a ready rustls config from the user, or a certificate and key read from
/// PEM files that can be reloaded without a restart.
///
/// Cloning is cheap and the clones share the certificate: reloading one clone changes what
/// every clone serves.
#[derive(Clone)]
pub struct Tls {
    /// What every handshake starts from. For files, its certificate resolver is `files.resolver`.
    config: Arc<ServerConfig>,
    /// Set when made from PEM files; `None` for a user's config, which has nothing to reload.
    files: Option<Arc<PemFiles>>,
}

impl Tls {
    /// Reads the certificate chain and private key (PKCS#8, PKCS#1 or SEC1) now, so that a bad
    /// file stops the program at start rather than at the first handshake.
    ///
    /// The certificate file holds the chain, leaf first; other PEM sections in it (a key, say)
    /// are skipped. The key file's first private key is used. ALPN offers `h2` and `http/1.1`.
    /// The configuration uses rustls's *ring* provider explicitly, never the process-wide default,
    /// so that a program linking a second provider does not make this panic.
    ///
    /// # Errors
    ///
    /// Every error names the file(s) at fault:
    /// - [`Error::TlsFile`]: a file cannot be read;
    /// - [`Error::TlsPem`]: no certificate in the certificate file, no private key in the key
    ///   file, malformed PEM, or a leaf certificate that does not parse;
    /// - [`Error::TlsKey`]: the key is not one the provider supports, or it does not belong to
    ///   the leaf certificate;
    /// - [`Error::TlsConfig`]: rustls refused the configuration (not expected with the ring
    ///   provider's defaults).
    pub fn from_pem_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Tls, Error> {
        let cert = cert.into();
        let key = key.into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = load_certified_key(&cert, &key, &provider)?;
        let resolver = Arc::new(ReloadableCert {
            current: RwLock::new(Arc::new(certified)),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(Error::TlsConfig)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = default_alpn();
        Ok(Tls {
            config: Arc::new(config),
            files: Some(Arc::new(PemFiles {
                cert,
                key,
                provider,
                resolver,
                reload_lock: Mutex::new(()),
            })),
        })
    }

    /// Uses the caller's own configuration as it is (their crypto provider, their certificate
    /// resolver, their session settings).
    ///
    /// If its `alpn_protocols` is empty, ALPN is set to `h2`, `http/1.1` on a copy, because a
    /// server that offers no ALPN never gets HTTP/2 from a browser; a list the caller chose is
    /// left alone. [`Tls::reload`] does nothing for such a `Tls`: reloading is the caller's
    /// business (a resolver of their own can do it).
    pub fn from_config(config: Arc<ServerConfig>) -> Tls {
        let config = if config.alpn_protocols.is_empty() {
            let mut with_alpn = ServerConfig::clone(&config);
            with_alpn.alpn_protocols = default_alpn();
            Arc::new(with_alpn)
        } else {
            config
        };
        Tls {
            config,
            files: None,
        }
    }

    /// Re-reads the PEM files given to [`Tls::from_pem_files`].
    ///
    /// The new certificate and key are checked completely (both parse, the key loads, the key
    /// belongs to the certificate) before anything changes. On success, handshakes that start
    /// afterwards use the new certificate; handshakes in progress and open connections keep the
    /// old one. Clients resuming an earlier TLS session skip the certificate altogether, as they
    /// would with any server.
    ///
    /// Concurrent calls (two quick `SIGHUP`s) are serialized, so the last call to finish has read
    /// the files last: a slow earlier call cannot put back an older certificate.
    ///
    /// Returns `Ok(true)` after a reload and `Ok(false)` for a `Tls` made with
    /// [`Tls::from_config`], which has no files to read.
    ///
    /// # Errors
    ///
    /// The same as [`Tls::from_pem_files`]. On any error the certificate in use stays as it was,
    /// and the server keeps serving with it; the caller decides how to report the error.
    pub fn reload(&self) -> Result<bool, Error> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        // Held across read and swap so that reloads take effect in the order they read the
        // files. Nothing panics while it is held, and `()` cannot be left inconsistent, so a
        // poisoned lock is used as it is.
        let _serialized = files
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let certified = load_certified_key(&files.cert, &files.key, &files.provider)?;
        files.resolver.replace(Arc::new(certified));
        Ok(true)
    }

    /// The certificate and key paths, in that order, when made with [`Tls::from_pem_files`];
    /// `None` for [`Tls::from_config`].
    pub fn paths(&self) -> Option<(&Path, &Path)> {
        self.files
            .as_deref()
            .map(|files| (files.cert.as_path(), files.key.as_path()))
    }

    /// The rustls configuration that handshakes start from, for a caller with an accept loop of
    /// its own (a custom protocol next to the HTTP servers, a test client's counterpart).
    ///
    /// For a `Tls` made from files it carries the reloadable certificate: acceptors made from it
    /// see every later [`Tls::reload`], like the servers' own. For [`Tls::from_config`] it is the
    /// caller's configuration, with ALPN filled in if it was empty.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// What the server accepts connections with. Cheap: it shares this `Tls`'s configuration,
    /// so an acceptor made before a reload serves the reloaded certificate too.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short on purpose: a whole `ServerConfig` (twice the provider's algorithm lists) would
        // drown a server's `Debug` output. The paths and ALPN are what tell two `Tls`s apart.
        let alpn: Vec<_> = self
            .config
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect();
        let mut out = f.debug_struct("Tls");
        match &self.files {
            Some(files) => out.field("cert", &files.cert).field("key", &files.key),
            None => out.field("config", &"from_config"),
        };
        out.field("alpn", &alpn).finish_non_exhaustive()
    }
}

/// The files a [`Tls`] was made from, and what reloading them needs.
#[derive(Debug)]
struct PemFiles {
    cert: PathBuf,
    key: PathBuf,
    /// Loads the key on reload: the same provider the configuration signs with.
    provider: Arc<CryptoProvider>,
    /// Shared with the `ServerConfig`; a reload swaps its certificate.
    resolver: Arc<ReloadableCert>,
    /// Serializes reloads; see [`Tls::reload`].
    reload_lock: Mutex<()>,
}

/// A certificate resolver that always answers with the current certificate, whatever the
/// client asked for (SNI is not used to choose: one server, one certificate).
struct ReloadableCert {
    /// Read once per handshake (a read lock and an `Arc` clone); written only by a reload.
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    fn get(&self) -> Arc<CertifiedKey> {
        // The lock only ever holds a complete `Arc`: a writer that panicked cannot have left a
        // half-written value, so a poisoned lock is still safe to read.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = certified;
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is deliberately not printed; the chain length says which state this is in
        // without dumping certificates into logs.
        f.debug_struct("ReloadableCert")
            .field("chain_len", &self.get().cert.len())
            .finish_non_exhaustive()
    }
}

fn default_alpn() -> Vec<Vec<u8>> {
    DEFAULT_ALPN.iter().map(|p| p.to_vec()).collect()
}

/// Reads and checks a certificate chain and its key; nothing is swapped until this succeeds.
fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let chain = read_chain(cert_path)?;
    let key_der = read_key(key_path)?;
    let key_error = |reason: String| Error::TlsKey {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason,
    };

    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| {
            key_error(match e {
                // Display would prefix "unexpected error: ", which it is not.
                rustls::Error::General(why) => format!("unsupported or invalid private key: {why}"),
                e => format!("unsupported or invalid private key: {e}"),
            })
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half, so there is nothing to compare.
        // rustls's own `CertifiedKey::from_der` accepts that too; ring's keys always can.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        // The leaf is not a certificate that parses: a problem with the certificate file, not
        // with the key.
        Err(rustls::Error::InvalidCertificate(e)) => Err(Error::TlsPem {
            path: cert_path.to_path_buf(),
            reason: format!("the first certificate cannot be parsed: {e:?}"),
        }),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(key_error(
            "the private key does not belong to the first certificate".to_owned(),
        )),
        Err(e) => Err(key_error(e.to_string())),
    }
}

/// Every certificate in the file, in order; other PEM sections are skipped.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    // Read the whole file first: I/O errors then come out as `TlsFile`, distinct from PEM errors.
    let bytes = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if chain.is_empty() {
        return Err(Error::TlsPem {
            path: path.to_path_buf(),
            reason: "no certificate found (expected a \"BEGIN CERTIFICATE\" PEM section)"
                .to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key in the file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::TlsPem {
            path: path.to_path_buf(),
            reason: "no private key found (expected a \"BEGIN PRIVATE KEY\", \
                     \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" PEM section)"
                .to_owned(),
        },
        e => pem_error(path, &e),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::TlsFile {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: &pem::Error) -> Error {
    Error::TlsPem {
        path: path.to_path_buf(),
        reason: format!("invalid PEM: {e}"),
    }
}
