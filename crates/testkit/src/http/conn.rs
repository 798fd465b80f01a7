//! HTTP/1.1 and HTTP/2 connections through hyper's client, plain or over TLS: a test holds one
//! open across a restart, sends requests on it, and reads each response to its end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::error::BoxError;
use super::pid::pid_in_body;
use super::target::Target;
use crate::tls::Handshake;
use crate::wait::TIMEOUT;

/// A response, read to its end.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version it came in.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Reply {
    async fn read(res: http::Response<hyper::body::Incoming>) -> Result<Reply, BoxError> {
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The pid the body names (see [`pid_in_body`]).
    pub fn pid(&self) -> Option<u32> {
        pid_in_body(&self.body)
    }

    /// Whether the response says `Connection: close`.
    pub fn closes(&self) -> bool {
        self.headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("close"))
        })
    }

    /// Checks that this is a 200 whose body names `pid`.
    ///
    /// # Panics
    ///
    /// When it is not: an assertion for tests.
    #[track_caller]
    pub fn assert_ok_from(&self, pid: u32) {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert_eq!(
            self.pid(),
            Some(pid),
            "answered by another process: {self:?}"
        );
    }
}

/// An HTTP/1.1 connection; its connection task runs on the current runtime.
#[derive(Debug)]
pub struct H1 {
    sender: http1::SendRequest<Empty<Bytes>>,
    /// What its TLS handshake showed (empty for plain TCP).
    pub handshake: Handshake,
}

impl H1 {
    /// Connects to `target` and completes the HTTP/1.1 handshake.
    ///
    /// # Errors
    ///
    /// When connecting fails.
    pub async fn open(target: &Target) -> Result<H1, BoxError> {
        let (io, handshake) = target.connect().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn);
        Ok(H1 { sender, handshake })
    }

    /// `GET path` on this connection.
    ///
    /// # Errors
    ///
    /// When the request fails: the connection was closed (or reset, see
    /// [`is_reset`](super::is_reset)) before the response was read.
    pub async fn get(&mut self, path: &str) -> Result<Reply, BoxError> {
        let req = Request::get(path)
            .header(header::HOST, "localhost")
            .body(Empty::new())?;
        let res = self.sender.send_request(req).await?;
        Reply::read(res).await
    }
}

/// An HTTP/2 connection (h2 by ALPN over TLS, or h2c with prior knowledge); cloning it gives
/// another handle on the same connection, for streams in parallel.
#[derive(Clone, Debug)]
pub struct H2 {
    sender: http2::SendRequest<Empty<Bytes>>,
    scheme: &'static str,
    addr: SocketAddr,
    /// What its TLS handshake showed (empty for h2c).
    pub handshake: Handshake,
}

impl H2 {
    /// Connects to `target` and completes the HTTP/2 handshake.
    ///
    /// # Errors
    ///
    /// When connecting fails.
    pub async fn open(target: &Target) -> Result<H2, BoxError> {
        let (io, handshake) = target.connect().await?;
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(conn);
        Ok(H2 {
            sender,
            scheme: target.scheme(),
            addr: target.addr,
            handshake,
        })
    }

    /// `GET path` as a new stream of this connection.
    ///
    /// # Errors
    ///
    /// When the connection is closed, or the stream is refused or reset.
    pub async fn get(&self, path: &str) -> Result<Reply, BoxError> {
        let mut sender = self.sender.clone();
        sender.ready().await?;
        let uri = format!("{}://localhost:{}{path}", self.scheme, self.addr.port());
        let res = sender
            .send_request(Request::get(uri).body(Empty::new())?)
            .await?;
        Reply::read(res).await
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// `GET path` on a new HTTP/1.1 connection.
///
/// # Errors
///
/// As [`H1::open`] and [`H1::get`].
pub async fn get_once(target: Target, path: String) -> Result<Reply, BoxError> {
    H1::open(&target).await?.get(&path).await
}

/// Requests `path` on new connections, one after another with `pause` between them, until
/// `stop` is set; returns every outcome (the pid that answered, or what failed). Bounded: each
/// request by [`TIMEOUT`], and the whole by three times [`TIMEOUT`]'s worth of requests.
pub async fn trickle(
    target: Target,
    path: &'static str,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<Result<u32, String>> {
    let mut outcomes = Vec::new();
    let most = (TIMEOUT.as_millis() / pause.as_millis().max(1)) as usize * 3;
    while !stop.load(Ordering::SeqCst) && outcomes.len() < most {
        let outcome =
            match tokio::time::timeout(TIMEOUT, get_once(target.clone(), path.into())).await {
                Ok(Ok(reply)) if reply.status == StatusCode::OK => {
                    reply.pid().ok_or_else(|| format!("no pid in {reply:?}"))
                }
                Ok(Ok(reply)) => Err(format!("{reply:?}")),
                Ok(Err(e)) => Err(format!("{e:?}")),
                Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
            };
        outcomes.push(outcome);
        tokio::time::sleep(pause).await;
    }
    outcomes
}
