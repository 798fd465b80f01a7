use std::io;
use std::path::PathBuf;

/// Everything that can stop `gracehttp` from serving.
///
/// Errors while serving (a failed connection, a failed upgrade, a certificate reload that did
/// not work) are not returned: they are logged and reported as [`Event`](crate::Event)s, and
/// the server goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server could not get its listening socket.
    #[error("server {server:?}: {source}")]
    Listen {
        /// The server's name.
        server: String,
        /// What gracenet said.
        source: gracenet::Error,
    },

    /// Two servers were given the same name.
    #[error("two servers are named {0:?}; names must be unique")]
    DuplicateName(String),

    /// A server's endpoint is not a stream socket (UDP cannot serve HTTP/1.1 or HTTP/2).
    #[error("server {server:?}: {endpoint} is not a stream socket")]
    NotAStream {
        /// The server's name.
        server: String,
        /// The endpoint.
        endpoint: String,
    },

    /// Reporting ready (to the parent process or systemd) or writing the pid file failed.
    #[error("cannot report ready: {0}")]
    Ready(#[source] gracenet::Error),

    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A certificate or key file holds no usable PEM.
    #[error("{path}: {reason}")]
    TlsPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The key cannot be used with the certificate (does not match, unsupported algorithm).
    #[error("key {key} does not fit certificate {cert}: {reason}")]
    TlsKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[source] rustls::Error),

    /// An operating system resource (signal handler, runtime facility) was not available.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}
