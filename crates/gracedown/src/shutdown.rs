//! Shutdown with two deadlines.

use std::future::Future;
use std::time::Duration;

use crate::drain::Drain;

/// Default for [`StopTimeouts::stop`]: how long busy connections get to finish on their own.
/// Thirty seconds, like Kubernetes' default termination grace period, so a server stopped
/// there is done before the kubelet's SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for [`StopTimeouts::kill`]: how long force-closed connections get to end. Five
/// seconds: an aborted task normally ends at its next poll, so anything left by then is stuck
/// for good (a blocking call, a connection held outside its task).
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The two deadlines of [`Drain::shutdown`]. `None` waits forever.
///
/// The default is [`DEFAULT_STOP_TIMEOUT`] (30 s) then [`DEFAULT_KILL_TIMEOUT`] (5 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopTimeouts {
    /// Graceful phase: how long to wait for connections to finish after the drain starts.
    /// When it passes, the connections still open are force-closed. `None`: never force.
    pub stop: Option<Duration>,
    /// After the force-close: how long to wait for the force-closed connections to end.
    /// `None`: wait until they all end.
    pub kill: Option<Duration>,
}

impl Default for StopTimeouts {
    fn default() -> Self {
        StopTimeouts {
            stop: Some(DEFAULT_STOP_TIMEOUT),
            kill: Some(DEFAULT_KILL_TIMEOUT),
        }
    }
}

/// What a [`Drain::shutdown`] saw, connection by connection. Every connection that was open
/// when it started, or tracked while it ran, is in exactly one of the three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Ended without being force-closed: on their own before the stop deadline, or idle and
    /// closed at once by the drain.
    pub finished: u64,
    /// Were force-closed at the stop deadline and then ended before the kill deadline.
    pub forced: u64,
    /// Still open at the kill deadline: their task ignored the abort (it is blocked without
    /// yielding) or the connection is held somewhere the abort does not reach. They are still
    /// counted as active and end, counted as forced, whenever they do.
    pub stuck: usize,
}

impl Summary {
    /// Whether every connection finished on its own: nothing forced, nothing stuck.
    pub fn is_graceful(&self) -> bool {
        self.forced == 0 && self.stuck == 0
    }
}

async fn wait_at_most(limit: Option<Duration>, done: impl Future<Output = ()>) -> bool {
    match limit {
        Some(limit) => tokio::time::timeout(limit, done).await.is_ok(),
        None => {
            done.await;
            true
        }
    }
}

impl Drain {
    /// Drains and stops: starts the drain, waits up to `timeouts.stop` for every connection to
    /// end, force-closes the rest, waits up to `timeouts.kill` for them to end, and says how it
    /// went.
    ///
    /// Returns as soon as no connection is open, without waiting out the deadlines. It may be
    /// called more than once, concurrently too: each call waits with its own deadlines and
    /// counts what ended while it waited, and the first stop deadline to pass force-closes for
    /// all.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the waiting, nothing else: the drain (and the force-close, if
    /// it already happened) stays in effect.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime with time enabled, like [`tokio::time::timeout`], when a
    /// deadline is set.
    pub async fn shutdown(&self, timeouts: StopTimeouts) -> Summary {
        let before = self.counters();
        self.drain();
        let graceful = wait_at_most(timeouts.stop, self.state().all_ended()).await;
        if !graceful {
            tracing::warn!(
                open = self.counters().active,
                stop_timeout = ?timeouts.stop,
                "stop timeout passed, force-closing the connections still open"
            );
            self.force_close();
            wait_at_most(timeouts.kill, self.state().all_ended()).await;
        }
        let after = self.counters();
        let summary = Summary {
            finished: after.finished.wrapping_sub(before.finished),
            forced: after.forced.wrapping_sub(before.forced),
            // After a graceful end nothing is stuck, whatever was tracked since.
            stuck: if graceful { 0 } else { after.active },
        };
        if summary.stuck > 0 {
            tracing::warn!(
                stuck = summary.stuck,
                kill_timeout = ?timeouts.kill,
                "connections still open after the kill timeout"
            );
        }
        summary
    }
}
