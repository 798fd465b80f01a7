//! The tracked connection: a pass-through I/O wrapper that holds the connection's guard.
//!
//! # How a force-close reaches the socket
//!
//! The socket stays *inside* [`Tracked`], pinned in place, and the I/O path is a plain
//! pass-through. The drain never touches the socket itself; it reaches the connection in two
//! ways at once, both kept off the I/O path:
//!
//! * The task that serves the connection, when it was started with [`Tracked::spawn`], is
//!   aborted. Tokio drops an aborted task's future the next time it schedules the task, whatever
//!   that future is awaiting (a database call, a channel, a timer), and with the future goes the
//!   `Tracked` and so the socket: the peer sees the close.
//! * Whatever is parked on the connection's own I/O (a task we did not spawn, or a WebSocket
//!   that hyper moved out of its original task) is woken, and from then on reads end (EOF for an
//!   idle close, `ConnectionAborted` for a force-close) and writes fail, so the protocol code
//!   unwinds and drops the connection.
//!
//! The alternative, keeping the socket behind a mutex in the shared guard so the drain could drop
//! it directly, was rejected: it puts a lock on every read and write of every connection (the
//! very path this crate must not slow down), it needs `IO: Unpin` or a second box, and it would
//! not end the task that owns the connection anyway, so the count would stay "stuck" all the
//! same. What is left uncovered is a task stuck *without yielding* (a blocking call inside an
//! async task) or a connection moved out of reach (into a thread): nothing short of killing the
//! process closes those, and [`Summary::stuck`](crate::Summary::stuck) reports them honestly.
//!
//! # Where the state lives
//!
//! This file holds the part of a connection that owns the socket: [`Tracked`], its guard (the
//! counting when the connection opens and ends) and [`ConnHandle`]. What the drain reaches of a
//! connection, its flags, attached task and parked wakers, is in `conn_state.rs`, below the
//! [`Drain`]; this file sits above it, since a `Tracked` holds a `Drain`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use crate::conn_state::{Close, ConnState};
use crate::drain::Drain;
use crate::registry::Slot;
use crate::state::FORCING;

impl Drain {
    /// Tracks a connection accepted by other means. It counts in `accepted` and `active` until
    /// the returned [`Tracked`] is dropped.
    ///
    /// A connection tracked after the force-close started is closed at once.
    pub fn track<IO>(&self, io: IO) -> Tracked<IO> {
        Tracked::new(io, self.clone())
    }
}

/// The guard: whoever holds it holds one unit of `active`. Its `Drop` is the only place a
/// connection is counted as ended, so the count is right however the connection ends: closed,
/// errored, its task aborted or panicked, or the `Tracked` simply dropped somewhere.
#[derive(Debug)]
struct ConnGuard {
    shared: Arc<ConnState>,
    drain: Drain,
    slot: Slot,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let state = self.drain.state();
        // Counted in `finished` or `forced` (by `end`) before `active` goes down (in
        // `connection_ended`), so that whoever sees `active` reach zero also sees this
        // connection in one of them.
        self.shared.end(state);
        self.drain.registry().remove(self.slot);
        state.connection_ended();
    }
}

pin_project! {
    /// A connection counted by a [`Drain`]: `AsyncRead + AsyncWrite` pass-through over `IO`
    /// (a `TcpStream`, `UnixStream`, TLS stream, anything), holding the connection's guard.
    ///
    /// Created by [`TrackedListener::accept`](crate::TrackedListener::accept) or
    /// [`Drain::track`]. Dropping it, however that happens, counts the connection as ended.
    ///
    /// Reads and writes go straight to `IO` (no buffering, vectored writes forwarded) until the
    /// drain closes the connection; from then on reads return EOF (idle close) or
    /// `ConnectionAborted` (force-close), writes and flushes return `ConnectionAborted`, and
    /// `poll_shutdown` still reaches `IO` after an idle close so a protocol can close politely.
    #[derive(Debug)]
    pub struct Tracked<IO> {
        #[pin]
        io: IO,
        guard: ConnGuard,
    }
}

impl<IO> Tracked<IO> {
    fn new(io: IO, drain: Drain) -> Self {
        let state = drain.state();
        let number = state.accepted.fetch_add(1, Relaxed);
        state.active.fetch_add(1, SeqCst);
        let shared = Arc::new(ConnState::new());
        let slot = drain.registry().insert(number, Arc::clone(&shared));
        // Pairs with `Drain::force_close` (phase first, then the scan): a connection tracked
        // while the force-close runs is either found by the scan or sees the phase here. It
        // gets no grace the others did not get.
        if state.phase.load(SeqCst) >= FORCING {
            shared.close(Close::Force);
        }
        Tracked {
            io,
            guard: ConnGuard {
                shared,
                drain,
                slot,
            },
        }
    }

    /// A cheap, cloneable handle to this connection's state, for code that does not own the
    /// `Tracked` (an HTTP service marking the connection busy while a request runs).
    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            shared: Arc::clone(&self.guard.shared),
            drain: self.guard.drain.clone(),
        }
    }

    /// Declares that nothing is in progress on this connection: closing it loses no work.
    ///
    /// Once the drain starts (or at once, if it has started), an idle connection is closed:
    /// its task is aborted if it was started with [`Tracked::spawn`], and reads end with EOF.
    pub fn mark_idle(&self) {
        self.guard.shared.mark_idle(self.guard.drain.state());
    }

    /// Declares that work is in progress again, so a drain waits for this connection.
    ///
    /// Returns `false` if the drain already closed the connection (it was idle when the drain
    /// started): the caller should not start new work on it. This closes the race between a
    /// request arriving and the drain choosing idle connections to close.
    pub fn mark_busy(&self) -> bool {
        self.guard.shared.mark_busy(self.guard.drain.state())
    }

    /// Whether the connection is marked idle.
    pub fn is_idle(&self) -> bool {
        self.guard.shared.is_idle()
    }

    /// Whether the drain closed this connection (idle at drain time, or force-closed).
    pub fn is_closing(&self) -> bool {
        self.guard.shared.is_closing()
    }

    /// Completes when the drain starts: the connection should finish what it is doing and
    /// close (HTTP: `Connection: close` or GOAWAY). See [`Drain::drained`].
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        self.guard.drain.drained()
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.guard.drain.is_draining()
    }

    /// The drain this connection is counted by.
    pub fn drain(&self) -> &Drain {
        &self.guard.drain
    }

    /// Spawns the task that serves this connection, `serve(self)`, on the current tokio
    /// runtime, and attaches it to the connection, so that a close by the drain aborts it.
    ///
    /// This is what makes a force-close work when the task is stuck awaiting something other
    /// than the socket: the aborted task's future, and the socket inside it, are dropped, and
    /// the peer sees the close. A connection served by a task spawned some other way is still
    /// counted and its I/O still fails once it is closed, but only its own reads and writes can
    /// notice.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn<F, Fut>(self, serve: F) -> JoinHandle<Fut::Output>
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let shared = Arc::clone(&self.guard.shared);
        let task = tokio::spawn(serve(self));
        shared.attach(task.abort_handle());
        task
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The wrapped I/O object, mutably. Reading or writing through it bypasses the close
    /// checks, not the counting.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// The wrapped I/O object, pinned.
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut IO> {
        self.project().io
    }
}

impl<IO: AsyncRead> AsyncRead for Tracked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let io = this.io;
        this.guard
            .shared
            .guarded_read(cx, |cx| io.poll_read(cx, buf))
    }
}

impl<IO: AsyncWrite> AsyncWrite for Tracked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let io = this.io;
        this.guard
            .shared
            .guarded_write(cx, |cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let io = this.io;
        this.guard
            .shared
            .guarded_write(cx, |cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let io = this.io;
        this.guard.shared.guarded_write(cx, |cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        // After a force-close the socket is about to be dropped: a polite shutdown (a TLS
        // close_notify the peer may never read) must not keep the task alive any longer.
        if this.guard.shared.is_forced() {
            return Poll::Ready(Ok(()));
        }
        this.io.poll_shutdown(cx)
    }
}

/// A cloneable handle to one tracked connection's state, usable from any task, also after the
/// connection ended (then it changes nothing). Get one with [`Tracked::handle`].
#[derive(Debug, Clone)]
pub struct ConnHandle {
    shared: Arc<ConnState>,
    drain: Drain,
}

impl ConnHandle {
    /// See [`Tracked::mark_idle`].
    pub fn mark_idle(&self) {
        self.shared.mark_idle(self.drain.state());
    }

    /// See [`Tracked::mark_busy`].
    pub fn mark_busy(&self) -> bool {
        self.shared.mark_busy(self.drain.state())
    }

    /// Whether the connection is marked idle (never, once it ended).
    pub fn is_idle(&self) -> bool {
        self.shared.is_idle()
    }

    /// Whether the drain closed the connection.
    pub fn is_closing(&self) -> bool {
        self.shared.is_closing()
    }

    /// Whether the connection ended (its [`Tracked`] was dropped).
    pub fn is_ended(&self) -> bool {
        self.shared.is_ended()
    }

    /// See [`Drain::drained`].
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        self.drain.drained()
    }

    /// The drain this connection is counted by.
    pub fn drain(&self) -> &Drain {
        &self.drain
    }
}
