//! The runner: servers, signals, upgrades, reloads and the drain.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gracedown::{Counters, Drain, StopTimeouts};
use gracenet::{Listener, Net};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

use crate::accept::accept_loop;
use crate::conn::ConnCtx;
use crate::metrics::{Metrics, ServerMetrics};
use crate::{Error, Event, Server, Timeouts, Tls};

/// Runs servers that upgrade, stop and reload by signal without losing a request.
///
/// Signals (each configurable): `SIGUSR2` upgrades (the binary at the same path takes over the
/// sockets; this process drains and [`run`](Grace::run) returns [`Outcome::HandedOver`]),
/// `SIGTERM` and `SIGINT` stop gracefully (a second one force-closes what is left), `SIGHUP`
/// reloads the certificates of servers whose TLS comes from PEM files. A [`Handle`] does the
/// same from code.
#[derive(Debug)]
pub struct Grace {
    net: Arc<Net>,
    servers: Vec<Server>,
    stop: StopTimeouts,
    timeouts: Timeouts,
    upgrade_signal: Option<SignalKind>,
    reload_signal: Option<SignalKind>,
    stop_signals: bool,
    handle: Handle,
    commands: mpsc::UnboundedReceiver<Command>,
}

/// Controls a running [`Grace`] from code, and observes it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<Event>,
    metrics: Metrics,
}

#[derive(Debug)]
enum Command {
    Upgrade,
    Reload,
    Stop,
    ForceStop,
    /// How an upgrade ended; after a handover, with the drain counters from just before the
    /// upgrade thread started the drain.
    UpgradeFinished(Result<(u32, Vec<Counters>), gracenet::Error>),
}

/// How [`Grace::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Stopped by a signal or [`Handle::stop`], after draining.
    Stopped(Drained),
    /// A new process took over the sockets; this one drained.
    HandedOver {
        /// The new process.
        pid: u32,
        /// How the drain went.
        drained: Drained,
    },
}

/// How the connections of every server ended in the drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Connections that finished by themselves.
    pub finished: u64,
    /// Connections force-closed at the stop deadline.
    pub forced: u64,
    /// Connections still open after the kill deadline.
    pub stuck: usize,
}

impl Handle {
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

    /// The metrics in the Prometheus text format (see [`admin`](crate::admin)).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    fn emit(&self, event: Event) {
        // No receiver is fine: events are an offer.
        let _ = self.shared.events.send(event);
    }
}

impl Grace {
    /// A runner whose sockets come from `net` (inherited from a previous version, from systemd,
    /// or bound fresh). Create the `Net` first thing in `main`, before the runtime starts.
    pub fn new(net: Arc<Net>) -> Grace {
        let (commands, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(64);
        Grace {
            net,
            servers: Vec::new(),
            stop: StopTimeouts::default(),
            timeouts: Timeouts::default(),
            upgrade_signal: Some(SignalKind::user_defined2()),
            reload_signal: Some(SignalKind::hangup()),
            stop_signals: true,
            handle: Handle {
                shared: Arc::new(Shared {
                    commands,
                    events,
                    metrics: Metrics::default(),
                }),
            },
            commands: rx,
        }
    }

    /// Adds a server.
    pub fn server(mut self, server: Server) -> Grace {
        self.servers.push(server);
        self
    }

    /// The stop timeout (graceful phase of the drain) and kill timeout (after force-closing);
    /// defaults in [`StopTimeouts`].
    pub fn stop_timeouts(mut self, stop: StopTimeouts) -> Grace {
        self.stop = stop;
        self
    }

    /// Timeouts for every server's connections.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Grace {
        self.timeouts = timeouts;
        self
    }

    /// The signal that starts an upgrade (default `SIGUSR2`; `None`: only [`Handle::upgrade`]).
    pub fn upgrade_signal(mut self, signal: Option<SignalKind>) -> Grace {
        self.upgrade_signal = signal;
        self
    }

    /// The signal that reloads certificates (default `SIGHUP`; `None`: only
    /// [`Handle::reload_tls`]).
    pub fn reload_signal(mut self, signal: Option<SignalKind>) -> Grace {
        self.reload_signal = signal;
        self
    }

    /// Whether `SIGTERM` and `SIGINT` stop the servers (default `true`).
    pub fn stop_signals(mut self, enabled: bool) -> Grace {
        self.stop_signals = enabled;
        self
    }

    /// A handle to control and observe the servers once running.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves until stopped or handed over, then drains and returns how it ended.
    ///
    /// Listens on every server's socket (inherited when there is one), installs the signal
    /// handlers, and reports ready (to the parent process, or to systemd) once every server
    /// accepts.
    ///
    /// # Errors
    ///
    /// Only before serving: a socket that cannot be had ([`Error::Listen`]), duplicate names,
    /// an endpoint that is not a stream socket, a signal handler that cannot be installed, or a
    /// failed [`Net::ready`]. Once serving, failures are logged and reported as events, and
    /// serving goes on.
    pub async fn run(self) -> Result<Outcome, Error> {
        let Grace {
            net,
            servers,
            stop,
            timeouts,
            upgrade_signal,
            reload_signal,
            stop_signals,
            handle,
            mut commands,
        } = self;
        let pid = std::process::id();
        let metrics = &handle.shared.metrics;
        metrics
            .generation
            .store(net.generation(), Ordering::Relaxed);

        let mut names = HashSet::new();
        for s in &servers {
            if !names.insert(s.name.clone()) {
                return Err(Error::DuplicateName(s.name.clone()));
            }
        }

        // Handlers go in before anything is announced: the default action of SIGUSR2 and
        // SIGHUP is to terminate.
        let install = |kind: Option<SignalKind>| -> Result<Option<Signal>, Error> {
            kind.map(signal).transpose().map_err(|source| Error::Io {
                what: "installing a signal handler",
                source,
            })
        };
        let mut usr2 = install(upgrade_signal)?;
        let mut hup = install(reload_signal)?;
        let mut term = install(stop_signals.then(SignalKind::terminate))?;
        let mut int = install(stop_signals.then(SignalKind::interrupt))?;

        // Every socket first, so that a server that cannot listen stops the start before
        // anything is announced.
        let mut listeners = Vec::with_capacity(servers.len());
        for s in servers {
            let (listener, info) = match net.listen(&s.endpoint, Some(&s.name)) {
                Ok(l) => l,
                Err(source) => {
                    return Err(Error::Listen {
                        server: s.name,
                        source,
                    });
                }
            };
            listeners.push((s, listener, info.inherited, info.bound));
        }

        // The accept loops are made here but started only once this process is ready: a
        // successor that fails before it commits must not have taken connections with it (the
        // kernel queues them meanwhile, and the parent keeps accepting).
        let mut loops: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
            Vec::new();
        let mut drains = Vec::new();
        // Tells the accept loops that this is a final stop (see `accept_loop`).
        let (closing, closing_rx) = watch::channel(false);
        let mut tls_servers: Vec<(String, Tls)> = Vec::new();
        for (s, listener, inherited, bound) in listeners {
            let drain = Drain::new();
            let server_metrics = Arc::new(ServerMetrics::new(s.name.clone(), drain.clone()));
            metrics.add(Arc::clone(&server_metrics));
            let tls = s.tls.is_some();
            if let Some(t) = &s.tls {
                tls_servers.push((s.name.clone(), t.clone()));
            }
            let ctx = Arc::new(ConnCtx {
                name: s.name.clone(),
                handler: s.handler,
                builder: ConnCtx::builder(&timeouts),
                tls: s.tls,
                timeouts,
                metrics: server_metrics,
            });
            let register = |source| Error::Io {
                what: "registering a listener with the runtime",
                source,
            };
            let shown = match listener {
                Listener::Tcp(l) => {
                    let l = tokio::net::TcpListener::from_std(l).map_err(register)?;
                    let shown = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    loops.push(Box::pin(accept_loop(
                        drain.track_listener(l),
                        ctx,
                        closing_rx.clone(),
                        bound,
                    )));
                    shown
                }
                Listener::Unix(l) => {
                    let l = tokio::net::UnixListener::from_std(l).map_err(register)?;
                    loops.push(Box::pin(accept_loop(
                        drain.track_listener(l),
                        ctx,
                        closing_rx.clone(),
                        bound,
                    )));
                    s.endpoint.to_string()
                }
                _ => {
                    return Err(Error::NotAStream {
                        server: s.name,
                        endpoint: s.endpoint.to_string(),
                    });
                }
            };
            tracing::info!(pid, server = %s.name, addr = %shown, tls, inherited, "listening");
            drains.push(drain);
        }

        if net.has_parent() {
            // In place rather than on the blocking pool: eight bytes into the parent's pipe,
            // once, before any accept loop runs. A blocking-pool thread would have to be
            // started for it, which costs more than the call, on the path to serving.
            net.ready().map_err(Error::Ready)?;
        } else {
            // The pid file and a datagram to systemd: file I/O, off the runtime's threads.
            let ready_net = Arc::clone(&net);
            blocking(move || ready_net.ready())
                .await?
                .map_err(Error::Ready)?;
        }
        let mut accepting = JoinSet::new();
        for l in loops {
            accepting.spawn(l);
        }
        if net.has_parent() {
            // The parent rewrites the pid file when it commits; make sure of it, off the path.
            let claiming = Arc::clone(&net);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = claiming.claim_pid_file() {
                    tracing::warn!(pid, error = %e, "the pid file does not name this process");
                }
            });
        }
        tracing::info!(pid, generation = net.generation(), "ready");
        handle.emit(Event::Ready {
            pid,
            generation: net.generation(),
        });

        let mut upgrading = false;
        let start_upgrade = |upgrading: &mut bool| {
            if *upgrading {
                tracing::warn!(pid, "upgrade requested while one is in progress; refused");
                handle.emit(Event::UpgradeRefused);
                return;
            }
            *upgrading = true;
            tracing::info!(pid, "upgrade: starting the new binary");
            handle.emit(Event::UpgradeStarted);
            let net = Arc::clone(&net);
            let shared = Arc::clone(&handle.shared);
            let drains = drains.clone();
            // `upgrade` blocks until the new process is ready or has failed. Once it has
            // committed (and told systemd), this thread stops the accept loops itself: until
            // they stop, this process takes connections the new one is waiting for, and the
            // runner would need a thread switch or two to get there (under load, a wait for a
            // busy worker too).
            tokio::task::spawn_blocking(move || {
                let result = net.upgrade().map(|pid| {
                    let before = drains.iter().map(Drain::counters).collect();
                    for d in &drains {
                        d.drain();
                    }
                    shared.metrics.draining.store(true, Ordering::Relaxed);
                    (pid, before)
                });
                let _ = shared.commands.send(Command::UpgradeFinished(result));
            });
        };
        let upgrade_finished = |result: Result<(u32, Vec<Counters>), gracenet::Error>| match result
        {
            Ok((new_pid, before)) => {
                metrics.upgrades_done.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    pid,
                    new_pid,
                    "upgrade done: the new process serves; draining"
                );
                handle.emit(Event::UpgradeDone { pid: new_pid });
                Some((new_pid, before))
            }
            Err(gracenet::Error::Cancelled) => {
                tracing::info!(pid, "upgrade cancelled: the new process was killed");
                handle.emit(Event::UpgradeFailed {
                    reason: gracenet::Error::Cancelled.to_string(),
                });
                None
            }
            Err(e) => {
                metrics.upgrades_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pid, error = %e, "upgrade failed; still serving");
                handle.emit(Event::UpgradeFailed {
                    reason: e.to_string(),
                });
                None
            }
        };

        // Serve until told to stop, or until a new process took over (with the drain counters
        // from before the upgrade thread started the drain).
        let mut successor: Option<(u32, Vec<Counters>)> = None;
        let mut forced = false;
        let stop_reason = loop {
            tokio::select! {
                Some(()) = recv(&mut usr2) => start_upgrade(&mut upgrading),
                Some(()) = recv(&mut hup) => reload(&tls_servers, &handle, pid).await,
                Some(()) = recv(&mut term) => break "SIGTERM",
                Some(()) = recv(&mut int) => break "SIGINT",
                Some(cmd) = commands.recv() => match cmd {
                    Command::Upgrade => start_upgrade(&mut upgrading),
                    Command::Reload => reload(&tls_servers, &handle, pid).await,
                    Command::Stop => break "stop requested",
                    Command::ForceStop => { forced = true; break "forced stop requested" }
                    Command::UpgradeFinished(result) => {
                        upgrading = false;
                        if let Some(handover) = upgrade_finished(result) {
                            successor = Some(handover);
                            break "handed over";
                        }
                    }
                },
            }
        };
        if successor.is_none() {
            tracing::info!(pid, reason = stop_reason, "stopping");
            // A stop must not leave a successor behind: an upgrade in progress is cancelled
            // (its new process, not yet committed, is killed), which ends it within
            // milliseconds. Only one that committed just before still hands over.
            if upgrading {
                net.cancel_upgrade();
            }
            while upgrading {
                match commands.recv().await {
                    Some(Command::UpgradeFinished(result)) => {
                        upgrading = false;
                        successor = upgrade_finished(result);
                    }
                    Some(Command::ForceStop) => forced = true,
                    Some(_) => {}
                    None => break,
                }
            }
            if successor.is_none() {
                if let Err(e) = gracenet::notify::stopping() {
                    tracing::warn!(pid, error = %e, "systemd notification failed");
                }
            }
        }

        if successor.is_none() {
            // A final stop. Closing a listener resets the connections still in its queue, so:
            // gracenet seals the sockets (no new connection is queued) and closes its copies,
            // and socket and pid files go, while the accept loops still accept. Then each loop
            // takes what is left in its queue and drops the last copy: the port closes with
            // nothing waiting in it. All of this before any connection is told to close, so that
            // no client reconnects into a queue about to close.
            let sealing = Arc::clone(&net);
            if let Err(e) = blocking(move || sealing.close()).await? {
                tracing::warn!(pid, error = %e, "closing the listeners");
            }
            closing.send_replace(true);
            while accepting.join_next().await.is_some() {}
        }
        // The drain. After a handover the upgrade thread has started it already, and the calls
        // below change nothing: each accept loop has returned and dropped its copy of the
        // listener; the sockets stay open for the successor (gracenet holds them).
        metrics.draining.store(true, Ordering::Relaxed);
        handle.emit(Event::Draining);
        // Counted from the drain's start: connections it closes at once end before the
        // shutdowns below take their own snapshots, and must be counted all the same.
        let before: Vec<_> = match &mut successor {
            Some((_, before)) => std::mem::take(before),
            None => drains.iter().map(Drain::counters).collect(),
        };
        for d in &drains {
            d.drain();
        }
        while accepting.join_next().await.is_some() {}
        tracing::info!(
            pid,
            active = drains.iter().map(|d| d.counters().active).sum::<usize>(),
            "draining"
        );

        let mut shutdowns = JoinSet::new();
        for d in &drains {
            if forced {
                d.force_close();
            }
            let d = d.clone();
            shutdowns.spawn(async move { d.shutdown(stop).await });
        }
        let mut drained = Drained::default();
        loop {
            let force = tokio::select! {
                next = shutdowns.join_next() => match next {
                    Some(Ok(summary)) => {
                        drained.stuck += summary.stuck;
                        false
                    }
                    Some(Err(e)) => {
                        tracing::error!(pid, error = %e, "a drain task failed");
                        false
                    }
                    None => break,
                },
                Some(()) = recv(&mut int) => true,
                Some(()) = recv(&mut term) => true,
                Some(cmd) = commands.recv() => matches!(cmd, Command::ForceStop),
            };
            if force {
                tracing::warn!(pid, "stop signal again: force-closing the connections left");
                for d in &drains {
                    d.force_close();
                }
            }
        }
        for (d, before) in drains.iter().zip(&before) {
            let after = d.counters();
            drained.finished += after.finished.saturating_sub(before.finished);
            drained.forced += after.forced.saturating_sub(before.forced);
        }
        tracing::info!(
            pid,
            finished = drained.finished,
            forced = drained.forced,
            stuck = drained.stuck,
            "drained"
        );
        Ok(match successor {
            Some((pid, _)) => Outcome::HandedOver { pid, drained },
            None => Outcome::Stopped(drained),
        })
    }
}

/// Reloads the certificates of every server whose TLS comes from files, off the runtime's
/// threads (file reads), and reports each outcome.
async fn reload(servers: &[(String, Tls)], handle: &Handle, pid: u32) {
    let list = servers.to_vec();
    let results = match blocking(move || {
        list.into_iter()
            .map(|(name, tls)| (name, tls.reload()))
            .collect::<Vec<_>>()
    })
    .await
    {
        Ok(results) => results,
        Err(e) => {
            tracing::error!(pid, error = %e, "certificate reload task failed");
            return;
        }
    };
    for (name, result) in results {
        match result {
            Ok(true) => {
                tracing::info!(pid, server = %name, "certificate reloaded");
                handle.emit(Event::TlsReloaded { server: name });
            }
            Ok(false) => {}
            Err(e) => {
                handle
                    .shared
                    .metrics
                    .tls_reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pid, server = %name, error = %e, "certificate reload failed; keeping the old one");
                handle.emit(Event::TlsReloadFailed {
                    server: name,
                    reason: e.to_string(),
                });
            }
        }
    }
}

/// Runs blocking work (files, fsync, waiting for a process) off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
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
