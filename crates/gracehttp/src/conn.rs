//! Serving one connection: the TLS handshake, HTTP/1.1 or HTTP/2, and when to close it.
//!
//! hyper serves the protocol; this module decides when to ask it to finish
//! (`graceful_shutdown`). HTTP/1.1 then answers the request in flight with `Connection:
//! close` and closes; HTTP/2 sends GOAWAY and lets open streams finish. The decision follows
//! the drain semantics of the project:
//!
//! - a connection with a request in flight is asked at once when the drain starts;
//! - an HTTP/2 connection is asked at once too: GOAWAY is a clean signal that clients retry on;
//! - an idle HTTP/1.1 connection (kept alive, or new and silent) is asked once it has been
//!   idle for [`DRAIN_MIN_IDLE`], so that a request already on the wire is read and answered
//!   rather than reset, and never later than [`DRAIN_MAX_IDLE_WAIT`] after the drain started;
//! - outside a drain, a connection idle for the idle timeout is asked too.
//!
//! Outside a drain, requests are not reported to the supervisor one by one (that would wake
//! the connection's task twice per request, and re-arm a timer each time): they update
//! counters, and the supervisor reads them when its one timer fires or the drain starts, and
//! re-arms the timer from what it finds. During a drain a request's start wakes it, so that a
//! first HTTP/2 request gets its GOAWAY at once; an HTTP/1.1 response written during a drain
//! says `Connection: close` itself.
//!
//! Handshakes and header reads keep their own timeouts; anything still open at the stop
//! deadline is force-closed by gracedown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use gracedown::{ConnHandle, Tracked};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::ServerMetrics;
use crate::service::{Body, BoxError, Handler};
use crate::{Server, Timeouts, Tls};

/// How long an idle HTTP/1.1 connection is left open after the drain started, at least since
/// its last activity: long enough for a request a client sent just before to arrive and be
/// answered.
pub const DRAIN_MIN_IDLE: Duration = Duration::from_millis(250);

/// The longest an idle connection is kept once the drain started: silent clients cannot hold
/// an old process.
pub const DRAIN_MAX_IDLE_WAIT: Duration = Duration::from_secs(1);

/// What every connection of one server shares.
pub(crate) struct ConnCtx {
    pub(crate) name: String,
    pub(crate) handler: Handler,
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) tls: Option<Tls>,
    pub(crate) timeouts: Timeouts,
    pub(crate) metrics: Arc<ServerMetrics>,
}

impl ConnCtx {
    pub(crate) fn new(server: &Server, timeouts: Timeouts, metrics: Arc<ServerMetrics>) -> ConnCtx {
        ConnCtx {
            name: server.name.clone(),
            handler: server.handler.clone(),
            builder: ConnCtx::builder(&timeouts),
            tls: server.tls.clone(),
            timeouts,
            metrics,
        }
    }

    fn builder(timeouts: &Timeouts) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(timeouts.header_read);
        builder.http2().timer(hyper_util::rt::TokioTimer::new());
        builder
    }
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve<IO>(conn: Tracked<IO>, ctx: Arc<ConnCtx>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handle = conn.handle();
    match &ctx.tls {
        None => serve_http(TokioIo::new(conn), handle, &ctx).await,
        Some(tls) => {
            let handshake = tls.acceptor().accept(conn);
            let stream = match ctx.timeouts.tls_handshake {
                Some(limit) => match tokio::time::timeout(limit, handshake).await {
                    Ok(r) => r,
                    Err(_) => {
                        ctx.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(server = %ctx.name, "TLS handshake timed out");
                        return;
                    }
                },
                None => handshake.await,
            };
            match stream {
                Ok(stream) => serve_http(TokioIo::new(stream), handle, &ctx).await,
                Err(e) => {
                    ctx.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(server = %ctx.name, error = %e, "TLS handshake failed");
                }
            }
        }
    }
}

/// What the connection's requests tell its supervisor.
struct ConnState {
    in_flight: AtomicUsize,
    /// When the connection last became idle, in milliseconds since `start`.
    idle_since_ms: AtomicU64,
    start: Instant,
    http2: AtomicBool,
    /// A request has arrived. Until then the header read timeout runs from the start of the
    /// connection: hyper's own timer only starts once the protocol has been detected from the
    /// first bytes, so a client that sends nothing would otherwise escape it.
    seen_request: AtomicBool,
    /// Set by the supervisor once the drain has started: from then on a request's start wakes
    /// it through `started`.
    draining: AtomicBool,
    started: Notify,
}

impl ConnState {
    fn idle_since(&self) -> Instant {
        self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }
}

/// Counts a request as in flight for as long as it lives.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(state: &Arc<ConnState>) -> InFlight {
        // SeqCst here and in the supervisor (flag stored, then counter read): either the
        // supervisor sees this request in flight, or this request sees the drain and wakes it.
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        if state.draining.load(Ordering::SeqCst) {
            state.started.notify_one();
        }
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        let elapsed = Instant::now()
            .saturating_duration_since(s.start)
            .as_millis();
        s.idle_since_ms.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The service hyper calls: counts requests, tells handlers about the drain, and times the
/// connection's idleness.
struct Svc {
    handler: Handler,
    state: Arc<ConnState>,
    conn: ConnHandle,
    metrics: Arc<ServerMetrics>,
}

/// A response body that keeps its request counted as in flight until it is sent (or dropped):
/// a long stream is not an idle connection.
struct Counted {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<Counted>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Counted>, BoxError>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let http1 = req.version() < Version::HTTP_2;
        if !http1 {
            self.state.http2.store(true, Ordering::Relaxed);
        }
        self.state.seen_request.store(true, Ordering::Relaxed);
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        // Handlers of long responses and upgraded connections (WebSocket) can watch
        // `ConnHandle::drained` to finish in time.
        req.extensions_mut().insert(self.conn.clone());
        let guard = InFlight::enter(&self.state);
        let fut = self.handler.call(req);
        let conn = self.conn.clone();
        Box::pin(async move {
            let mut res = fut.await?;
            // A request answered while the process drains tells its client to go elsewhere,
            // even when it was read and answered between two looks of the supervisor: hyper
            // closes an HTTP/1.1 connection after a response that says `Connection: close`.
            // Not a protocol switch (101): its `Connection: upgrade` must stay, and the
            // upgraded connection is told of the drain through its `ConnHandle`.
            if http1
                && conn.drain().is_draining()
                && res.status() != StatusCode::SWITCHING_PROTOCOLS
            {
                res.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(res.map(|body| Counted {
                body,
                _in_flight: guard,
            }))
        })
    }
}

async fn serve_http<IO>(io: TokioIo<IO>, handle: ConnHandle, ctx: &ConnCtx)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let state = Arc::new(ConnState {
        in_flight: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(0),
        start,
        http2: AtomicBool::new(false),
        seen_request: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        started: Notify::new(),
    });
    let svc = Svc {
        handler: ctx.handler.clone(),
        state: Arc::clone(&state),
        conn: handle.clone(),
        metrics: Arc::clone(&ctx.metrics),
    };
    let conn = ctx.builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let drained = handle.drained();
    tokio::pin!(drained);
    let mut draining_since: Option<Instant> = None;
    let mut asked = false;

    loop {
        let close_at = if asked {
            None
        } else {
            close_at(&state, draining_since, &ctx.timeouts)
        };
        if let Some(at) = close_at {
            if at <= Instant::now() {
                // One more look at the connection first: bytes of a request that arrived
                // meanwhile are read (and the request counted as in flight, which is answered
                // with `Connection: close`) instead of being dropped with the connection.
                tokio::select! {
                    biased;
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            tracing::debug!(server = %ctx.name, error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    () = std::future::ready(()) => {}
                }
                if close_at_now(&state, draining_since, &ctx.timeouts) {
                    conn.as_mut().graceful_shutdown();
                    asked = true;
                }
                continue;
            }
        }
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(server = %ctx.name, error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut drained, if draining_since.is_none() => {
                draining_since = Some(Instant::now());
                state.draining.store(true, Ordering::SeqCst);
            }
            () = state.started.notified(), if draining_since.is_some() && !asked => {}
            () = tokio::time::sleep_until(close_at.unwrap_or(start)), if close_at.is_some() => {}
        }
    }
}

fn close_at_now(state: &ConnState, draining_since: Option<Instant>, timeouts: &Timeouts) -> bool {
    close_at(state, draining_since, timeouts).is_some_and(|at| at <= Instant::now())
}

/// When to ask hyper to close the connection, or (when that is not known from the counters
/// alone) to look again; `None`: only the drain can change it.
fn close_at(
    state: &ConnState,
    draining_since: Option<Instant>,
    timeouts: &Timeouts,
) -> Option<Instant> {
    let in_flight = state.in_flight.load(Ordering::SeqCst) > 0;
    match draining_since {
        Some(drain) if in_flight || state.http2.load(Ordering::Relaxed) => Some(drain),
        // Every idle connection gets DRAIN_MIN_IDLE from the drain (or from its last
        // response, if later) to deliver a request its client already sent.
        Some(drain) => {
            Some((state.idle_since().max(drain) + DRAIN_MIN_IDLE).min(drain + DRAIN_MAX_IDLE_WAIT))
        }
        // Requests are not reported one by one: look again an idle timeout from now, when the
        // idle time is counted from the end of the last request.
        None if in_flight => timeouts.idle.map(|idle| Instant::now() + idle),
        None => {
            let idle = timeouts.idle.map(|idle| state.idle_since() + idle);
            let first_request = match state.seen_request.load(Ordering::Relaxed) {
                false => timeouts.header_read.map(|limit| state.start + limit),
                true => None,
            };
            match (idle, first_request) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    }
}
