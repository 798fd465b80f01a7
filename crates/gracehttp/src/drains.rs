//! Every server's drain, begun once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use gracedown::{Counters, Drain, Summary};

use crate::Handle;

/// The drains of every server of a process, and the moment the process began draining.
///
/// Cheap to clone: the upgrade thread begins the drain the moment the new process commits, the
/// runner (again, which changes nothing then) when it drains after a handover or a stop.
#[derive(Debug, Clone)]
pub(crate) struct Drains(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    drains: Vec<Drain>,
    handle: Handle,
    /// Every drain's counters from just before it began: what the drain is counted from.
    before: OnceLock<Vec<Counters>>,
}

impl Drains {
    pub(crate) fn new(drains: Vec<Drain>, handle: Handle) -> Drains {
        Drains(Arc::new(Inner {
            drains,
            handle,
            before: OnceLock::new(),
        }))
    }

    /// Begins the drain of every server, once, however often and from wherever it is called:
    /// the accept loops stop (and drop their listeners; the sockets stay open for a successor,
    /// gracenet holds them), `drained` futures complete, and [`Handle::is_draining`] turns
    /// true.
    pub(crate) fn begin(&self) {
        self.0.before.get_or_init(|| {
            // Counted from here: connections the drain closes at once end before any shutdown
            // takes its own snapshot, and must be counted all the same.
            let before = self.0.drains.iter().map(Drain::counters).collect();
            for d in &self.0.drains {
                d.drain();
            }
            self.0
                .handle
                .metrics()
                .draining
                .store(true, Ordering::Relaxed);
            before
        });
    }

    /// Every server's drain.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Drain> {
        self.0.drains.iter()
    }

    /// Connections open now, in every server.
    pub(crate) fn active(&self) -> usize {
        self.iter().map(|d| d.counters().active).sum()
    }

    /// Force-closes every connection left, in every server.
    pub(crate) fn force_close(&self) {
        for d in self.iter() {
            d.force_close();
        }
    }

    /// How the connections of every server ended since the drain began, with `stuck` still
    /// open at the kill deadline.
    pub(crate) fn summary(&self, stuck: usize) -> Summary {
        let mut summary = Summary::default();
        summary.stuck = stuck;
        let before = self.0.before.get().map_or(&[][..], Vec::as_slice);
        for (d, before) in self.iter().zip(before) {
            let after = d.counters();
            summary.finished += after.finished.saturating_sub(before.finished);
            summary.forced += after.forced.saturating_sub(before.forced);
        }
        summary
    }
}
