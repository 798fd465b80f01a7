//! Controlling and observing a running [`Grace`](crate::Grace) from code.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, mpsc};

use crate::Event;
use crate::metrics::Metrics;

/// Controls a running [`Grace`](crate::Grace) from code, and observes it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

/// What a `Grace`, its handles and its runner share.
#[derive(Debug)]
pub(crate) struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<Event>,
    pub(crate) metrics: Metrics,
}

/// What a [`Handle`] asks of the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Upgrade,
    Reload,
    Stop,
    ForceStop,
}

impl Handle {
    /// A handle, and the receiving end of its commands for the runner.
    pub(crate) fn new() -> (Handle, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            commands,
            events,
            metrics: Metrics::default(),
        });
        (Handle { shared }, rx)
    }

    fn send(&self, cmd: Command) {
        // The receiver lives as long as `Grace::run`; afterwards there is nothing to control.
        let _ = self.shared.commands.send(cmd);
    }

    /// Starts an upgrade, as `SIGUSR2` does. Refused (with a log line and
    /// [`Event::UpgradeRefused`]) while one is in progress.
    pub fn upgrade(&self) {
        self.send(Command::Upgrade);
    }

    /// Reloads the certificates of servers whose TLS comes from PEM files, as `SIGHUP` does.
    pub fn reload_tls(&self) {
        self.send(Command::Reload);
    }

    /// Stops gracefully, as `SIGTERM` does.
    pub fn stop(&self) {
        self.send(Command::Stop);
    }

    /// Stops, and force-closes the connections left without waiting for the stop timeout, as a
    /// second `SIGINT` does.
    pub fn force_stop(&self) {
        self.send(Command::Stop);
        self.send(Command::ForceStop);
    }

    /// Receives the lifecycle [`Event`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Whether this process stopped accepting and drains.
    pub fn is_draining(&self) -> bool {
        self.shared.metrics.draining.load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format (see [`admin`](fn@crate::admin)).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub(crate) fn emit(&self, event: Event) {
        // No receiver is fine: events are an offer.
        let _ = self.shared.events.send(event);
    }
}
