//! The shared drain state: phase, counters, the drain signal and the connection registry.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize};

use tokio::sync::{Notify, watch};

use crate::conn::{Close, Tracked};
use crate::listener::TrackedListener;
use crate::registry::Registry;

/// Serving normally.
pub(crate) const RUNNING: u8 = 0;
/// Drain started: accept nothing more, close idle connections, tell busy ones to finish.
pub(crate) const DRAINING: u8 = 1;
/// Stop deadline passed: every connection still open is closed.
pub(crate) const FORCING: u8 = 2;

pub(crate) struct Inner {
    /// The phase, for the checks on hot paths (one atomic load). It only ever grows.
    pub(crate) phase: AtomicU8,
    /// The same phase, for whoever awaits a change (listeners, `drained()` futures). Updated
    /// after `phase`, so a waiter woken by it always finds `phase` up to date.
    phase_tx: watch::Sender<u8>,
    pub(crate) active: AtomicUsize,
    pub(crate) idle: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) forced: AtomicU64,
    /// Woken when `active` reaches zero during a drain; `shutdown` waits on it.
    all_ended: Notify,
    pub(crate) registry: Registry,
}

/// The drain: counts a server's connections and stops them gracefully, then forcefully.
///
/// Cheap to clone (an `Arc` inside); every clone, every [`TrackedListener`] and every
/// [`Tracked`] connection made from it share one state. Use one `Drain` per group of servers
/// that stop together. All methods take `&self` and may be called from any task or thread, any
/// number of times, in any order.
///
/// # Phases
///
/// 1. Running: listeners accept, connections are counted.
/// 2. Draining, from [`drain`](Drain::drain) (or [`shutdown`](Drain::shutdown)): listeners
///    stop accepting and drop this process's copy of the listening socket, [`drained`]
///    futures complete so connections can finish up, and connections marked idle are closed.
/// 3. Force-closing, from [`force_close`](Drain::force_close) (or `shutdown` at its stop
///    deadline): every connection still open is closed.
///
/// [`drained`]: Drain::drained
#[derive(Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

/// A snapshot of a drain's counters, from [`Drain::counters`].
///
/// Each field is read with its own atomic load, so a snapshot taken while connections come and
/// go may be off by the connections that changed during the read; at rest it is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Connections open now (idle ones included).
    pub active: usize,
    /// Open connections marked idle ([`Tracked::mark_idle`]).
    pub idle: usize,
    /// Connections tracked since the drain was created.
    pub accepted: u64,
    /// Connections that ended without being force-closed (idle ones closed by the drain
    /// included: closing them loses nothing).
    pub finished: u64,
    /// Connections that ended after being force-closed.
    pub forced: u64,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.inner.phase.load(Relaxed) {
            RUNNING => "running",
            DRAINING => "draining",
            _ => "force-closing",
        };
        f.debug_struct("Drain")
            .field("phase", &phase)
            .field("counters", &self.counters())
            .finish()
    }
}

impl Drain {
    /// A new drain, running, with all counters at zero.
    pub fn new() -> Self {
        let (phase_tx, _) = watch::channel(RUNNING);
        Drain {
            inner: Arc::new(Inner {
                phase: AtomicU8::new(RUNNING),
                phase_tx,
                active: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
                accepted: AtomicU64::new(0),
                finished: AtomicU64::new(0),
                forced: AtomicU64::new(0),
                all_ended: Notify::new(),
                registry: Registry::new(),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Wraps a listener so that what it accepts is tracked and it stops accepting when the
    /// drain starts. See [`TrackedListener`].
    pub fn track_listener<L>(&self, listener: L) -> TrackedListener<L> {
        TrackedListener::new(listener, self.clone())
    }

    /// Tracks a connection accepted by other means. It counts in `accepted` and `active` until
    /// the returned [`Tracked`] is dropped.
    ///
    /// A connection tracked after the force-close started is closed at once.
    pub fn track<IO>(&self, io: IO) -> Tracked<IO> {
        Tracked::new(io, self.clone())
    }

    /// The counters, now. Lock-free: a handful of atomic loads.
    pub fn counters(&self) -> Counters {
        let inner = &self.inner;
        Counters {
            active: inner.active.load(SeqCst),
            idle: inner.idle.load(SeqCst),
            accepted: inner.accepted.load(SeqCst),
            finished: inner.finished.load(SeqCst),
            forced: inner.forced.load(SeqCst),
        }
    }

    /// Whether the drain has started (force-close included).
    pub fn is_draining(&self) -> bool {
        self.inner.phase.load(SeqCst) >= DRAINING
    }

    /// Whether the force-close has started.
    pub fn is_force_closing(&self) -> bool {
        self.inner.phase.load(SeqCst) >= FORCING
    }

    /// Completes when the drain starts (at once if it has started).
    ///
    /// Each connection task can `select!` on it to begin its own graceful close. The future
    /// owns what it needs (`'static`), so it can be created in one task and awaited in another.
    /// Once every `Drain`, listener and connection of this drain is gone, nobody can start the
    /// drain any more and the future stays pending, as a channel whose sender is gone would.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it loses nothing, a new one completes just the same.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut phase = self.inner.phase_tx.subscribe();
        async move {
            if phase.wait_for(|p| *p >= DRAINING).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Starts the drain: listeners stop accepting (a pending `accept` returns `None`), every
    /// [`drained`](Drain::drained) future completes, and connections marked idle are closed.
    /// Busy connections are left to finish. Idempotent; returns at once.
    pub fn drain(&self) {
        if !self.advance(DRAINING) {
            return;
        }
        tracing::debug!(active = self.inner.active.load(Relaxed), "drain started");
        // Pairs with `mark_idle` (bit first, then phase): see there. A connection that is not
        // idle now but goes idle later closes itself in `mark_idle`.
        for conn in self.inner.registry.snapshot() {
            conn.close(Close::Idle);
        }
        // `shutdown` may already wait with nothing active (it checks after enabling its
        // notification, so this wake-up is only a courtesy for waiters in odd interleavings).
        self.inner.all_ended.notify_waiters();
    }

    /// Force-closes every connection still open: aborts the tasks started with
    /// [`Tracked::spawn`] (which drops their sockets) and makes the I/O of the others fail.
    /// Starts the drain first if needed. Idempotent; returns at once, without waiting for the
    /// connections to end ([`shutdown`](Drain::shutdown) waits).
    pub fn force_close(&self) {
        self.drain();
        if !self.advance(FORCING) {
            return;
        }
        let conns = self.inner.registry.snapshot();
        tracing::debug!(open = conns.len(), "force-closing connections");
        for conn in conns {
            conn.close(Close::Force);
        }
    }

    /// Moves the phase forward to `to`; returns whether this call did it (so exactly one caller
    /// does the work of each phase, however many race).
    fn advance(&self, to: u8) -> bool {
        if self.inner.phase.fetch_max(to, SeqCst) >= to {
            return false;
        }
        self.inner.phase_tx.send_if_modified(|p| {
            let moved = *p < to;
            if moved {
                *p = to;
            }
            moved
        });
        true
    }

    /// Called by a connection's guard, last, when the connection ended.
    pub(crate) fn connection_ended(&self) {
        let before = self.inner.active.fetch_sub(1, SeqCst);
        // Nobody waits for zero before a drain, and `notify_waiters` takes a lock: skip it while
        // running, so closing connections stays lock-free on the counting side.
        if before == 1 && self.inner.phase.load(SeqCst) >= DRAINING {
            self.inner.all_ended.notify_waiters();
        }
    }

    /// Completes when no connection is active (checked after the drain started).
    pub(crate) async fn all_ended(&self) {
        loop {
            let notified = self.inner.all_ended.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a connection ending between the check and the
            // await wakes us instead of being missed.
            notified.as_mut().enable();
            if self.inner.active.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}
