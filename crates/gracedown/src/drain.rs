//! The `Drain` façade: one handle to a drain's state and its connections, the phase changes
//! (`drain`, `force_close`) and the readings (`counters`, `is_draining`, `drained`).
//!
//! A `Drain` is the drain-wide state (`state.rs`) plus the registry of the connections'
//! shared parts (`registry.rs`, `conn_state.rs`), behind one `Arc`. It sits below the
//! connection and the listener, not above them: [`Tracked`], [`ConnHandle`] and
//! [`TrackedListener`] each hold a `Drain` and hand it out (`drain()`), so this file cannot
//! name them. The methods that make them, [`Drain::track`] and [`Drain::track_listener`], live
//! with what they make (`conn.rs`, `listener.rs`), as [`Drain::shutdown`] lives in
//! `shutdown.rs`.
//!
//! [`Tracked`]: crate::Tracked
//! [`ConnHandle`]: crate::ConnHandle
//! [`TrackedListener`]: crate::TrackedListener

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::conn_state::{Close, ConnState};
use crate::registry::Registry;
use crate::state::{DRAINING, FORCING, RUNNING, State};

/// Everything the clones of one `Drain` share, behind their one `Arc`.
struct Inner {
    state: State,
    registry: Registry<Arc<ConnState>>,
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
/// [`TrackedListener`]: crate::TrackedListener
/// [`Tracked`]: crate::Tracked
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
    ///
    /// [`Tracked::mark_idle`]: crate::Tracked::mark_idle
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
        let phase = match self.inner.state.phase.load(Relaxed) {
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
        Drain {
            inner: Arc::new(Inner {
                state: State::new(),
                registry: Registry::new(),
            }),
        }
    }

    /// The phase and the counters, for the connections' own accounting.
    pub(crate) fn state(&self) -> &State {
        &self.inner.state
    }

    /// Where each connection's shared part is kept while it is open.
    pub(crate) fn registry(&self) -> &Registry<Arc<ConnState>> {
        &self.inner.registry
    }

    /// The counters, now. Lock-free: a handful of atomic loads.
    pub fn counters(&self) -> Counters {
        let inner = &self.inner.state;
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
        self.inner.state.phase.load(SeqCst) >= DRAINING
    }

    /// Whether the force-close has started.
    pub fn is_force_closing(&self) -> bool {
        self.inner.state.phase.load(SeqCst) >= FORCING
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
        self.inner.state.drained()
    }

    /// Starts the drain: listeners stop accepting (a pending `accept` returns `None`), every
    /// [`drained`](Drain::drained) future completes, and connections marked idle are closed.
    /// Busy connections are left to finish. Idempotent; returns at once.
    pub fn drain(&self) {
        let state = &self.inner.state;
        if !state.advance(DRAINING) {
            return;
        }
        tracing::debug!(active = state.active.load(Relaxed), "drain started");
        // Pairs with `ConnState::mark_idle` (bit first, then phase): see there. A connection that is not
        // idle now but goes idle later closes itself in `mark_idle`.
        for conn in self.inner.registry.snapshot() {
            conn.close(Close::Idle);
        }
        // `shutdown` may already wait with nothing active (`State::all_ended` checks after
        // enabling its notification, so this wake-up is only a courtesy for waiters in odd
        // interleavings).
        state.wake_all_ended();
    }

    /// Force-closes every connection still open: aborts the tasks started with
    /// [`Tracked::spawn`] (which drops their sockets) and makes the I/O of the others fail.
    /// Starts the drain first if needed. Idempotent; returns at once, without waiting for the
    /// connections to end ([`shutdown`](Drain::shutdown) waits).
    ///
    /// [`Tracked::spawn`]: crate::Tracked::spawn
    pub fn force_close(&self) {
        self.drain();
        if !self.inner.state.advance(FORCING) {
            return;
        }
        let conns = self.inner.registry.snapshot();
        tracing::debug!(open = conns.len(), "force-closing connections");
        for conn in conns {
            conn.close(Close::Force);
        }
    }
}
