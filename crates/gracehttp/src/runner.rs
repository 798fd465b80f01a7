//! The runner, once started: it serves until a handover or a stop, stops (cancelling an upgrade
//! in progress), on a final stop seals the sockets and lets the accept loops take their queues,
//! and drains.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gracedown::{StopTimeouts, Summary};
use gracenet::Net;
use tokio::signal::unix::Signal;
use tokio::sync::oneshot::error::RecvError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::drains::Drains;
use crate::handle::Command;
use crate::start::Signals;
use crate::{Error, Event, Handle, Tls};

/// How an upgrade ended: the new process's pid once it serves, or why it does not.
type UpgradeResult = Result<u32, gracenet::Error>;

/// Where the result of an upgrade in progress comes; it comes as `Err` if the upgrade's thread
/// ended without sending one.
type UpgradeReceiver = oneshot::Receiver<UpgradeResult>;

/// A started runner: every server accepts.
#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) net: Arc<Net>,
    pub(crate) handle: Handle,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) signals: Signals,
    pub(crate) stop: StopTimeouts,
    /// The servers whose TLS comes from PEM files, for reloads.
    pub(crate) tls: Vec<(String, Tls)>,
    pub(crate) drains: Drains,
    /// The accept loops.
    pub(crate) accepting: JoinSet<()>,
    /// Tells the accept loops that this is a final stop (see `accept_loop`).
    pub(crate) closing: watch::Sender<bool>,
    /// The upgrade in progress: where its result will come.
    pub(crate) upgrade: Option<UpgradeReceiver>,
    pub(crate) pid: u32,
}

/// Why serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A new process serves, with this pid.
    HandedOver(u32),
    /// A stop was asked for; `forced` when the connections are to be force-closed at once.
    Stop { reason: &'static str, forced: bool },
}

impl Runner {
    /// Serves, starting upgrades and reloading certificates when asked, until a new process
    /// took over or a stop is asked for.
    pub(crate) async fn serve(&mut self) -> Ended {
        loop {
            tokio::select! {
                Some(()) = recv(&mut self.signals.upgrade) => self.start_upgrade(),
                Some(()) = recv(&mut self.signals.reload) => self.reload().await,
                Some(()) = recv(&mut self.signals.terminate) => return stop("SIGTERM", false),
                Some(()) = recv(&mut self.signals.interrupt) => return stop("SIGINT", false),
                Some(cmd) = self.commands.recv() => match cmd {
                    Command::Upgrade => self.start_upgrade(),
                    Command::Reload => self.reload().await,
                    Command::Stop => return stop("stop requested", false),
                    Command::ForceStop => return stop("forced stop requested", true),
                },
                Some(result) = upgrade_result(&mut self.upgrade) => {
                    if let Some(pid) = self.upgrade_ended(result) {
                        return Ended::HandedOver(pid);
                    }
                }
            }
        }
    }

    /// Starts an upgrade on a blocking thread, unless one is in progress. Once the new process
    /// has committed (and systemd was told), that thread begins the drain itself: until the
    /// accept loops stop, this process takes connections the new one is waiting for, and the
    /// runner would need a thread switch or two to get there (under load, a wait for a busy
    /// worker too).
    fn start_upgrade(&mut self) {
        let pid = self.pid;
        if self.upgrade.is_some() {
            tracing::warn!(pid, "upgrade requested while one is in progress; refused");
            self.handle.emit(Event::UpgradeRefused);
            return;
        }
        tracing::info!(pid, "upgrade: starting the new binary");
        self.handle.emit(Event::UpgradeStarted);
        let (done, result) = oneshot::channel();
        self.upgrade = Some(result);
        let net = Arc::clone(&self.net);
        let drains = self.drains.clone();
        tokio::task::spawn_blocking(move || {
            let result = net.upgrade();
            if result.is_ok() {
                drains.begin();
            }
            // The runner may have stopped waiting; then nobody needs the result.
            let _ = done.send(result);
        });
    }

    /// Reports how an upgrade ended; returns the new process's pid when it took over.
    fn upgrade_ended(&mut self, result: Result<UpgradeResult, RecvError>) -> Option<u32> {
        self.upgrade = None;
        let pid = self.pid;
        match result {
            Ok(Ok(new_pid)) => {
                let done = &self.handle.metrics().upgrades_done;
                done.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    pid,
                    new_pid,
                    "upgrade done: the new process serves; draining"
                );
                self.handle.emit(Event::UpgradeDone { pid: new_pid });
                Some(new_pid)
            }
            Ok(Err(e @ (gracenet::Error::Cancelled | gracenet::Error::Stopping))) => {
                tracing::info!(pid, error = %e, "upgrade cancelled: this process is stopping");
                let reason = e.to_string();
                self.handle.emit(Event::UpgradeFailed { reason });
                None
            }
            Ok(Err(e)) => self.upgrade_failed(e.to_string()),
            // The thread ended without a word; whether it committed, gracenet knows.
            Err(RecvError { .. }) => match self.net.superseded() {
                Some(new_pid) => self.upgrade_ended(Ok(Ok(new_pid))),
                None => self.upgrade_failed("the upgrade thread ended without a result".into()),
            },
        }
    }

    fn upgrade_failed(&self, reason: String) -> Option<u32> {
        let failed = &self.handle.metrics().upgrades_failed;
        failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(pid = self.pid, error = %reason, "upgrade failed; still serving");
        self.handle.emit(Event::UpgradeFailed { reason });
        None
    }

    /// Stops: an upgrade in progress is cancelled (its new process, not yet committed, is
    /// killed), which ends it within milliseconds; a stop must not leave a successor behind.
    /// Returns the successor's pid if one committed just before all the same, and whether a
    /// force-stop was asked for meanwhile.
    pub(crate) async fn stop(
        &mut self,
        reason: &'static str,
        mut forced: bool,
    ) -> (Option<u32>, bool) {
        let pid = self.pid;
        tracing::info!(pid, reason, "stopping");
        // Unconditionally: an upgrade asked for just before may not have started yet.
        self.net.refuse_upgrades();
        let mut successor = None;
        while self.upgrade.is_some() {
            tokio::select! {
                result = upgrade_result(&mut self.upgrade) => match result {
                    Some(result) => successor = self.upgrade_ended(result),
                    None => break,
                },
                Some(cmd) = self.commands.recv() => forced |= cmd == Command::ForceStop,
            }
        }
        if successor.is_none() {
            if let Err(e) = gracenet::notify::stopping() {
                tracing::warn!(pid, error = %e, "systemd notification failed");
            }
        }
        (successor, forced)
    }

    /// A final stop, not a handover. Closing a listener resets the connections still in its
    /// queue, so gracenet seals the sockets (no new connection is queued) and closes its copies,
    /// and socket and pid files go, while the accept loops still accept. Then each loop takes
    /// what is left in its queue and drops the last copy: the port closes with nothing waiting
    /// in it. All of this before any connection is told to close, so that no client reconnects
    /// into a queue about to close.
    pub(crate) async fn final_stop(&mut self) {
        let sealing = Arc::clone(&self.net);
        let failed = match blocking(move || sealing.close()).await {
            Ok(closed) => closed.err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = failed {
            tracing::warn!(pid = self.pid, %error, "closing the listeners");
        }
        self.closing.send_replace(true);
        while self.accepting.join_next().await.is_some() {}
    }

    /// The drain: every server stops accepting (after a handover the upgrade thread began this
    /// already), connections are told to finish and waited for with the stop and kill
    /// timeouts; a second `SIGINT`/`SIGTERM` (or [`Handle::force_stop`]) force-closes.
    pub(crate) async fn drain(&mut self, forced: bool) -> Summary {
        let pid = self.pid;
        self.drains.begin();
        self.handle.emit(Event::Draining);
        // Each accept loop has returned and dropped its copy of the listener; the sockets stay
        // open for a successor (gracenet holds them).
        while self.accepting.join_next().await.is_some() {}
        tracing::info!(pid, active = self.drains.active(), "draining");
        if forced {
            self.drains.force_close();
        }
        let mut shutdowns = JoinSet::new();
        for d in self.drains.iter() {
            let (d, stop) = (d.clone(), self.stop);
            shutdowns.spawn(async move { d.shutdown(stop).await });
        }
        let mut stuck = 0;
        loop {
            let force = tokio::select! {
                next = shutdowns.join_next() => match next {
                    Some(Ok(summary)) => {
                        stuck += summary.stuck;
                        false
                    }
                    Some(Err(e)) => {
                        tracing::error!(pid, error = %e, "a drain task failed");
                        false
                    }
                    None => break,
                },
                Some(()) = recv(&mut self.signals.interrupt) => true,
                Some(()) = recv(&mut self.signals.terminate) => true,
                Some(cmd) = self.commands.recv() => cmd == Command::ForceStop,
            };
            if force {
                tracing::warn!(pid, "stop signal again: force-closing the connections left");
                self.drains.force_close();
            }
        }
        let summary = self.drains.summary(stuck);
        tracing::info!(
            pid,
            finished = summary.finished,
            forced = summary.forced,
            stuck = summary.stuck,
            "drained"
        );
        summary
    }

    /// Reloads the certificates of every server whose TLS comes from files, off the runtime's
    /// threads (file reads), and reports each outcome.
    async fn reload(&self) {
        let (pid, handle) = (self.pid, &self.handle);
        let list = self.tls.clone();
        let reloaded = blocking(move || {
            list.into_iter()
                .map(|(name, tls)| (name, tls.reload()))
                .collect::<Vec<_>>()
        });
        let results = match reloaded.await {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(pid, error = %e, "certificate reload task failed");
                return;
            }
        };
        for (server, result) in results {
            match result {
                Ok(true) => {
                    tracing::info!(pid, %server, "certificate reloaded");
                    handle.emit(Event::TlsReloaded { server });
                }
                Ok(false) => {}
                Err(e) => {
                    let failed = &handle.metrics().tls_reloads_failed;
                    failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(pid, %server, error = %e, "certificate reload failed; keeping the old one");
                    let reason = e.to_string();
                    handle.emit(Event::TlsReloadFailed { server, reason });
                }
            }
        }
    }
}

fn stop(reason: &'static str, forced: bool) -> Ended {
    Ended::Stop { reason, forced }
}

/// Runs blocking work (files, fsync, waiting for a process) off the runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io {
        what: "a blocking task",
        source: std::io::Error::other(e.to_string()),
    })
}

/// The next delivery of an optional signal; never, without one.
async fn recv(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The result of the upgrade in progress; never, without one.
async fn upgrade_result(
    upgrade: &mut Option<UpgradeReceiver>,
) -> Option<Result<UpgradeResult, RecvError>> {
    match upgrade {
        Some(rx) => Some(rx.await),
        None => std::future::pending().await,
    }
}
