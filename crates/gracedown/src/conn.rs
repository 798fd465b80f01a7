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
//! # The per-connection state
//!
//! One `AtomicU8` of flags per connection, shared by the `Tracked`, its [`ConnHandle`]s and the
//! registry. The I/O path does one load of it per poll. Every transition is a single atomic
//! read-modify-write, so the counters derived from the flags (idle, finished, forced) are each
//! adjusted exactly once per transition even when a drain, the connection's own task and a
//! handle in another task race.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::{AbortHandle, JoinHandle};

use crate::drain::{DRAINING, Drain, FORCING};
use crate::registry::Slot;

/// The protocol said nothing is in progress: closing now loses no work.
const IDLE: u8 = 1 << 0;
/// The drain closed this connection (idle at drain time, or force-closed).
const CLOSING: u8 = 1 << 1;
/// The close was a force-close (stop deadline passed).
const FORCED: u8 = 1 << 2;
/// The guard was dropped and the connection counted as ended.
const DONE: u8 = 1 << 3;
/// A task was attached with [`Tracked::spawn`]; a close aborts it.
const TASK: u8 = 1 << 4;

const READ: usize = 0;
const WRITE: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Drain started (or the connection went idle during a drain): close it if it is idle.
    Idle,
    /// Stop deadline passed: close it whatever it is doing.
    Force,
}

/// What the drain can reach of one connection.
#[derive(Debug)]
pub(crate) struct ConnShared {
    flags: AtomicU8,
    /// The task serving the connection, when started with [`Tracked::spawn`]. Set at most once.
    task: OnceLock<AbortHandle>,
    /// Wakers of reads and writes that returned `Pending` outside the attached task (or with no
    /// attached task), woken on close. Only a poll that is about to sleep anyway touches this
    /// mutex, and only the drain ever competes for it, once per phase.
    wakers: Mutex<[Option<Waker>; 2]>,
}

fn lock_wakers(wakers: &Mutex<[Option<Waker>; 2]>) -> MutexGuard<'_, [Option<Waker>; 2]> {
    // Nothing inside the critical sections can panic, and `Option<Waker>`s are consistent
    // whatever happened, so a poisoned lock is used as is.
    wakers.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConnShared {
    fn new() -> Self {
        ConnShared {
            flags: AtomicU8::new(0),
            task: OnceLock::new(),
            wakers: Mutex::new([None, None]),
        }
    }

    fn flags(&self) -> u8 {
        self.flags.load(Acquire)
    }

    /// Closes the connection for `reason`; idempotent, safe from any thread.
    pub(crate) fn close(&self, reason: Close) {
        match reason {
            Close::Force => {
                let prev = self.flags.fetch_or(CLOSING | FORCED, SeqCst);
                if prev & (FORCED | DONE) != 0 {
                    return;
                }
            }
            Close::Idle => {
                // Only an idle connection is closed, and the check and the close are one step:
                // a connection that turned busy an instant ago is left alone (its `mark_busy`
                // won), one that is closing can no longer turn busy (`mark_busy` returns false).
                let closed = self.flags.fetch_update(SeqCst, SeqCst, |f| {
                    (f & IDLE != 0 && f & (CLOSING | DONE) == 0).then_some(f | CLOSING)
                });
                if closed.is_err() {
                    return;
                }
            }
        }
        if let Some(task) = self.task.get() {
            task.abort();
        }
        let parked = std::mem::take(&mut *lock_wakers(&self.wakers));
        // Woken outside the lock: `wake` may run the woken task's scheduler code.
        for waker in parked.into_iter().flatten() {
            waker.wake();
        }
    }

    fn attach(&self, task: AbortHandle) {
        if self.task.set(task).is_err() {
            // `Tracked::spawn` consumes the `Tracked`, so a second attach cannot happen.
            return;
        }
        // Pairs with `close`, which sets CLOSING and then looks for a task: both are SeqCst
        // read-modify-writes of `flags`, so either `close` sees the task or we see CLOSING.
        let prev = self.flags.fetch_or(TASK, SeqCst);
        if prev & CLOSING != 0 {
            if let Some(task) = self.task.get() {
                task.abort();
            }
        }
    }

    /// Whether a poll that returned `Pending` must leave its waker for the drain. Not when it
    /// runs inside the attached task, which a close aborts anyway; that keeps the common case
    /// (every connection started with `Tracked::spawn`) free of the waker mutex.
    fn must_park(&self, flags: u8) -> bool {
        if flags & TASK == 0 {
            return true;
        }
        match (self.task.get(), tokio::task::try_id()) {
            (Some(task), Some(current)) => task.id() != current,
            _ => true,
        }
    }

    /// Leaves `waker` for the drain; returns the flags as they are once it is stored, so the
    /// caller can notice a close that happened meanwhile (the close took the wakers before ours
    /// was stored and will not wake it).
    fn park(&self, direction: usize, waker: &Waker) -> u8 {
        {
            let mut wakers = lock_wakers(&self.wakers);
            match &mut wakers[direction] {
                Some(old) if old.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
        self.flags()
    }

    /// Runs one I/O poll of the connection: refused once the drain closed it, and, when it
    /// would sleep outside the attached task, with its waker left for the drain (and refused
    /// after all if the close happened meanwhile). `closed` says what a closed connection
    /// answers in this direction.
    fn guarded<T>(
        &self,
        direction: usize,
        cx: &mut Context<'_>,
        closed: fn(u8) -> io::Result<T>,
        io: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let flags = self.flags();
        if flags & CLOSING != 0 {
            return Poll::Ready(closed(flags));
        }
        let poll = io(cx);
        if poll.is_pending() && self.must_park(flags) {
            let flags = self.park(direction, cx.waker());
            if flags & CLOSING != 0 {
                return Poll::Ready(closed(flags));
            }
        }
        poll
    }

    fn mark_idle(&self, drain: &Drain) {
        let inner = drain.inner();
        // Count first and set the bit second (and the other way round when leaving idle), so
        // `idle` is never below the number of idle connections: a reader may see one too many
        // for an instant, never a wrapped-around `usize::MAX`.
        inner.idle.fetch_add(1, SeqCst);
        let set = self.flags.fetch_update(SeqCst, Relaxed, |f| {
            (f & (IDLE | DONE) == 0).then_some(f | IDLE)
        });
        if set.is_err() {
            inner.idle.fetch_sub(1, SeqCst);
            return;
        }
        // Pairs with `Drain::drain`, which publishes the phase and then closes the idle
        // connections it finds. Both sides are SeqCst, so at least one sees the other: a
        // connection that goes idle during a drain is closed at once, never left open.
        if inner.phase.load(SeqCst) >= DRAINING {
            self.close(Close::Idle);
        }
    }

    fn mark_busy(&self, drain: &Drain) -> bool {
        let cleared = self.flags.fetch_update(SeqCst, Relaxed, |f| {
            (f & IDLE != 0 && f & CLOSING == 0).then_some(f & !IDLE)
        });
        match cleared {
            Ok(_) => {
                drain.inner().idle.fetch_sub(1, SeqCst);
                true
            }
            Err(f) => f & CLOSING == 0,
        }
    }
}

fn closed_error(flags: u8) -> io::Error {
    let why = if flags & FORCED != 0 {
        "connection force-closed by the drain"
    } else {
        "idle connection closed by the drain"
    };
    io::Error::new(io::ErrorKind::ConnectionAborted, why)
}

/// The guard: whoever holds it holds one unit of `active`. Its `Drop` is the only place a
/// connection is counted as ended, so the count is right however the connection ends: closed,
/// errored, its task aborted or panicked, or the `Tracked` simply dropped somewhere.
#[derive(Debug)]
struct ConnGuard {
    shared: Arc<ConnShared>,
    drain: Drain,
    slot: Slot,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let inner = self.drain.inner();
        // One step: mark the connection done and leave idle, so a `ConnHandle::mark_idle` or
        // `mark_busy` racing with the drop cannot count it a second time.
        let prev = self
            .shared
            .flags
            .fetch_update(SeqCst, SeqCst, |f| Some((f | DONE) & !IDLE))
            .unwrap_or_else(|f| f);
        if prev & IDLE != 0 {
            inner.idle.fetch_sub(1, SeqCst);
        }
        // Counted before `active` goes down, so that whoever sees `active` reach zero also
        // sees this connection in `finished` or `forced`.
        if prev & FORCED != 0 {
            inner.forced.fetch_add(1, SeqCst);
        } else {
            inner.finished.fetch_add(1, SeqCst);
        }
        inner.registry.remove(self.slot);
        self.drain.connection_ended();
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
    pub(crate) fn new(io: IO, drain: Drain) -> Self {
        let inner = drain.inner();
        let number = inner.accepted.fetch_add(1, Relaxed);
        inner.active.fetch_add(1, SeqCst);
        let shared = Arc::new(ConnShared::new());
        let slot = inner.registry.insert(number, Arc::clone(&shared));
        // Pairs with `Drain::force_close` (phase first, then the scan): a connection tracked
        // while the force-close runs is either found by the scan or sees the phase here. It
        // gets no grace the others did not get.
        if inner.phase.load(SeqCst) >= FORCING {
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
        self.guard.shared.mark_idle(&self.guard.drain);
    }

    /// Declares that work is in progress again, so a drain waits for this connection.
    ///
    /// Returns `false` if the drain already closed the connection (it was idle when the drain
    /// started): the caller should not start new work on it. This closes the race between a
    /// request arriving and the drain choosing idle connections to close.
    pub fn mark_busy(&self) -> bool {
        self.guard.shared.mark_busy(&self.guard.drain)
    }

    /// Whether the connection is marked idle.
    pub fn is_idle(&self) -> bool {
        self.guard.shared.flags() & IDLE != 0
    }

    /// Whether the drain closed this connection (idle at drain time, or force-closed).
    pub fn is_closing(&self) -> bool {
        self.guard.shared.flags() & CLOSING != 0
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
            .guarded(READ, cx, read_closed, |cx| io.poll_read(cx, buf))
    }
}

/// Writes to a closed connection fail, idle or forced.
fn write_closed<T>(flags: u8) -> io::Result<T> {
    Err(closed_error(flags))
}

/// An idle connection reads as closed by the peer, which every protocol handles already; a
/// force-closed one reads as an error, so nobody mistakes it for a clean end.
fn read_closed(flags: u8) -> io::Result<()> {
    if flags & FORCED != 0 {
        Err(closed_error(flags))
    } else {
        Ok(())
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
            .guarded(WRITE, cx, write_closed, |cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let io = this.io;
        this.guard.shared.guarded(WRITE, cx, write_closed, |cx| {
            io.poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let io = this.io;
        this.guard
            .shared
            .guarded(WRITE, cx, write_closed, |cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let flags = this.guard.shared.flags();
        // After a force-close the socket is about to be dropped: a polite shutdown (a TLS
        // close_notify the peer may never read) must not keep the task alive any longer.
        if flags & FORCED != 0 {
            return Poll::Ready(Ok(()));
        }
        this.io.poll_shutdown(cx)
    }
}

/// A cloneable handle to one tracked connection's state, usable from any task, also after the
/// connection ended (then it changes nothing). Get one with [`Tracked::handle`].
#[derive(Debug, Clone)]
pub struct ConnHandle {
    shared: Arc<ConnShared>,
    drain: Drain,
}

impl ConnHandle {
    /// See [`Tracked::mark_idle`].
    pub fn mark_idle(&self) {
        self.shared.mark_idle(&self.drain);
    }

    /// See [`Tracked::mark_busy`].
    pub fn mark_busy(&self) -> bool {
        self.shared.mark_busy(&self.drain)
    }

    /// Whether the connection is marked idle (never, once it ended).
    pub fn is_idle(&self) -> bool {
        self.shared.flags() & IDLE != 0
    }

    /// Whether the drain closed the connection.
    pub fn is_closing(&self) -> bool {
        self.shared.flags() & CLOSING != 0
    }

    /// Whether the connection ended (its [`Tracked`] was dropped).
    pub fn is_ended(&self) -> bool {
        self.shared.flags() & DONE != 0
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
