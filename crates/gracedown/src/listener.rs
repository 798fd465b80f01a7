//! The tracked listener and the small `Accept` trait it is generic over.
//!
//! Nothing else in the crate knows listeners exist: a listener makes [`Tracked`] connections
//! through its [`Drain`], and [`Drain::track_listener`] lives here, with what it makes.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::conn::Tracked;
use crate::drain::Drain;

/// Something that accepts connections: tokio's [`TcpListener`](tokio::net::TcpListener) and
/// [`UnixListener`](tokio::net::UnixListener), or any accept function through [`accept_fn`].
pub trait Accept {
    /// The connection type.
    type Io;
    /// The peer address type.
    type Addr;

    /// Polls for the next connection, like [`TcpListener::poll_accept`]. An implementation
    /// must not lose a connection when the caller stops polling between two calls.
    ///
    /// [`TcpListener::poll_accept`]: tokio::net::TcpListener::poll_accept
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, Self::Addr)>>;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, Self::Addr)>> {
        tokio::net::TcpListener::poll_accept(self, cx)
    }
}

#[cfg(unix)]
impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, Self::Addr)>> {
        tokio::net::UnixListener::poll_accept(self, cx)
    }
}

/// An [`Accept`] made of an async accept function; see [`accept_fn`].
pub struct AcceptFn<F, Fut> {
    accept: F,
    /// The accept in progress. Kept across polls, so a connection the function already took
    /// is never lost because our caller was cancelled between two polls: that makes
    /// [`TrackedListener::accept`] cancel safe even when the function itself is not.
    pending: Option<Pin<Box<Fut>>>,
}

/// An [`Accept`] from any function that returns a future of the next connection: a channel
/// of in-memory streams, a vsock listener, a TCP listener with per-connection setup.
///
/// When the drain starts, an accept in progress is dropped with the listener. A function that
/// does slow work after taking a connection from the kernel (a TLS handshake, say) loses that
/// connection then: keep such work out of the accept function and do it in the connection's
/// task instead, where the drain lets it finish.
///
/// ```
/// # async fn example() -> std::io::Result<()> {
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let tcp = std::sync::Arc::new(tcp);
/// let drain = gracedown::Drain::new();
/// let mut listener = drain.track_listener(gracedown::accept_fn(move || {
///     let tcp = tcp.clone();
///     async move { tcp.accept().await }
/// }));
/// # drop(listener.accept()); Ok(()) }
/// ```
pub fn accept_fn<F, Fut, Io, Addr>(accept: F) -> AcceptFn<F, Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<(Io, Addr)>>,
{
    AcceptFn {
        accept,
        pending: None,
    }
}

impl<F, Fut> fmt::Debug for AcceptFn<F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcceptFn")
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

impl<F, Fut, Io, Addr> Accept for AcceptFn<F, Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<(Io, Addr)>>,
{
    type Io = Io;
    type Addr = Addr;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Io, Addr)>> {
        let accept = &mut self.accept;
        let pending = self.pending.get_or_insert_with(|| Box::pin(accept()));
        let accepted = ready!(pending.as_mut().poll(cx));
        self.pending = None;
        Poll::Ready(accepted)
    }
}

/// A listener whose connections are tracked by a [`Drain`], and which stops accepting when
/// the drain starts. Made by [`Drain::track_listener`].
///
/// Once the drain starts, `accept` returns `None` (a pending `accept` wakes up to do so) and the
/// listener drops its inner listener: this process's copy of the socket, nothing more. It never
/// calls `shutdown(2)` on the listening socket, which would stop every other process sharing
/// it (the new version of the server, after a handover) from accepting too; connections still
/// in the kernel's queue, and new ones, are left to whoever else holds the socket.
pub struct TrackedListener<L> {
    /// `None` once draining: dropped, so this process holds the socket no longer.
    listener: Option<L>,
    /// Polled before every accept. Boxed once per listener, not per accept, so that the
    /// listener can offer a plain `poll_accept` without a self-referential future.
    drained: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    drain: Drain,
}

impl<L> fmt::Debug for TrackedListener<L>
where
    L: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedListener")
            .field("listener", &self.listener)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl Drain {
    /// Wraps a listener so that what it accepts is tracked and it stops accepting when the
    /// drain starts. See [`TrackedListener`].
    pub fn track_listener<L>(&self, listener: L) -> TrackedListener<L> {
        TrackedListener::new(listener, self.clone())
    }
}

impl<L> TrackedListener<L> {
    fn new(listener: L, drain: Drain) -> Self {
        let drained = Box::pin(drain.drained());
        TrackedListener {
            listener: Some(listener),
            drained,
            drain,
        }
    }

    /// The inner listener (for its `local_addr`, say), or `None` once the drain started and
    /// it was dropped.
    pub fn get_ref(&self) -> Option<&L> {
        self.listener.as_ref()
    }

    /// The drain this listener belongs to.
    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// Takes the inner listener back, or `None` once the drain started and it was dropped.
    ///
    /// For a final stop, when this process holds the last copy of the socket: closing it would
    /// reset the connections still in the kernel's queue, so the caller accepts those first
    /// (tracking each with [`Drain::track`]), then drops the listener.
    pub fn into_inner(self) -> Option<L> {
        self.listener
    }
}

impl<L: Accept> TrackedListener<L> {
    /// Accepts the next connection, tracked; `None` once the drain has started.
    ///
    /// Accept errors are passed through as they come. Most are about one connection
    /// (`ECONNABORTED`) and the loop should go on; on `EMFILE`/`ENFILE` it should back off
    /// for a moment instead of spinning.
    ///
    /// ```no_run
    /// # async fn example(drain: gracedown::Drain) -> std::io::Result<()> {
    /// let tcp = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// let mut listener = drain.track_listener(tcp);
    /// while let Some(accepted) = listener.accept().await {
    ///     let Ok((conn, _peer)) = accepted else { continue };
    ///     conn.spawn(|conn| async move {
    ///         // serve `conn`; select on `conn.drained()` to close early when draining
    ///         drop(conn);
    ///     });
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe when `L::poll_accept` keeps what it accepted across polls, which tokio's
    /// listeners and [`accept_fn`] do: dropping the future before it completes loses no
    /// connection.
    pub async fn accept(&mut self) -> Option<io::Result<(Tracked<L::Io>, L::Addr)>> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next connection, tracked; `Ready(None)` once the drain has started.
    /// See [`accept`](TrackedListener::accept).
    #[allow(
        clippy::type_complexity,
        reason = "spelled out like `accept`, for the docs"
    )]
    pub fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<(Tracked<L::Io>, L::Addr)>>> {
        let Some(listener) = self.listener.as_mut() else {
            return Poll::Ready(None);
        };
        // The drain is checked first, every time: a connection that is ready in the kernel's
        // queue when the drain starts is left there for the other holders of the socket.
        if self.drain.is_draining() || self.drained.as_mut().poll(cx).is_ready() {
            // Dropping our copy of the socket is all "stop accepting" means.
            self.listener = None;
            return Poll::Ready(None);
        }
        let accepted = ready!(listener.poll_accept(cx));
        Poll::Ready(Some(
            accepted.map(|(io, addr)| (self.drain.track(io), addr)),
        ))
    }
}
