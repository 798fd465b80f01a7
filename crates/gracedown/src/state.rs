//! The drain-wide state: the phase, the counters and the all-ended notification.
//!
//! This is what a connection needs to know of its drain: whether the drain or the force-close
//! has started (one atomic load on the paths that ask), and which counters to move when it opens,
//! goes idle or ends. It knows nothing of connections themselves, of the registry or of
//! listeners, so that the per-connection state (`conn_state.rs`) can depend on it while the
//! [`Drain`](crate::Drain) façade, which reaches the connections, sits above both. What a
//! connection does here is atomics only; the locks inside the watch channel and the `Notify` are
//! taken when the phase moves, by `drained()` futures and `shutdown`, and by the connection that
//! ends last during a drain.

use std::future::Future;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize};

use tokio::sync::{Notify, watch};

/// Serving normally.
pub(crate) const RUNNING: u8 = 0;
/// Drain started: accept nothing more, close idle connections, tell busy ones to finish.
pub(crate) const DRAINING: u8 = 1;
/// Stop deadline passed: every connection still open is closed.
pub(crate) const FORCING: u8 = 2;

/// The phase and the counters of one drain, shared by every clone of its `Drain` and every
/// connection it tracks. The counters are the fields of [`Counters`](crate::Counters), kept as
/// atomics; each event moves each counter it concerns once (a step that turns out not to
/// apply is undone at once, as in `mark_idle`).
#[derive(Debug)]
pub(crate) struct State {
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
    /// Woken when `active` reaches zero during a drain; `all_ended` waits on it.
    all_ended: Notify,
}

impl State {
    /// Running, with all counters at zero.
    pub(crate) fn new() -> Self {
        let (phase_tx, _) = watch::channel(RUNNING);
        State {
            phase: AtomicU8::new(RUNNING),
            phase_tx,
            active: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            forced: AtomicU64::new(0),
            all_ended: Notify::new(),
        }
    }

    /// Moves the phase forward to `to`; returns whether this call did it (so exactly one caller
    /// does the work of each phase, however many race).
    pub(crate) fn advance(&self, to: u8) -> bool {
        if self.phase.fetch_max(to, SeqCst) >= to {
            return false;
        }
        self.phase_tx.send_if_modified(|p| {
            let moved = *p < to;
            if moved {
                *p = to;
            }
            moved
        });
        true
    }

    /// Completes when the phase reaches `DRAINING`; pending forever once the sender is gone.
    /// See [`Drain::drained`](crate::Drain::drained).
    pub(crate) fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut phase = self.phase_tx.subscribe();
        async move {
            if phase.wait_for(|p| *p >= DRAINING).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Wakes whoever waits in [`all_ended`](State::all_ended), for them to check again.
    pub(crate) fn wake_all_ended(&self) {
        self.all_ended.notify_waiters();
    }

    /// Called by a connection's guard, last, when the connection ended.
    pub(crate) fn connection_ended(&self) {
        let before = self.active.fetch_sub(1, SeqCst);
        // Nobody waits for zero before a drain, and `notify_waiters` takes a lock: skip it while
        // running, so closing connections stays lock-free on the counting side.
        if before == 1 && self.phase.load(SeqCst) >= DRAINING {
            self.all_ended.notify_waiters();
        }
    }

    /// Completes when no connection is active (checked after the drain started).
    pub(crate) async fn all_ended(&self) {
        loop {
            let notified = self.all_ended.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a connection ending between the check and the
            // await wakes us instead of being missed.
            notified.as_mut().enable();
            if self.active.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}
