//! Starting: every server's socket through gracenet, the signal handlers, the accept loops,
//! and the report that this process is ready.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gracedown::Drain;
use gracenet::{Listener, Net, SocketInfo};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::accept::accept_loop;
use crate::conn::ConnCtx;
use crate::drains::Drains;
use crate::grace::Grace;
use crate::metrics::ServerMetrics;
use crate::runner::{Runner, blocking};
use crate::{Error, Event, Handle, Server, Timeouts, Tls};

/// The signals a runner listens to, each optional.
#[derive(Debug)]
pub(crate) struct Signals {
    pub(crate) upgrade: Option<Signal>,
    pub(crate) reload: Option<Signal>,
    pub(crate) terminate: Option<Signal>,
    pub(crate) interrupt: Option<Signal>,
}

impl Signals {
    // The one place that installs signal handlers (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn install(
        upgrade: Option<SignalKind>,
        reload: Option<SignalKind>,
        stop: bool,
    ) -> Result<Signals, Error> {
        let install = |kind: Option<SignalKind>| -> Result<Option<Signal>, Error> {
            kind.map(signal).transpose().map_err(|source| Error::Io {
                what: "installing a signal handler",
                source,
            })
        };
        Ok(Signals {
            upgrade: install(upgrade)?,
            reload: install(reload)?,
            terminate: install(stop.then(SignalKind::terminate))?,
            interrupt: install(stop.then(SignalKind::interrupt))?,
        })
    }
}

/// An accept loop, made but not started.
type AcceptLoop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every server, listening, with its accept loop ready to start.
struct Listening {
    loops: Vec<AcceptLoop>,
    drains: Vec<Drain>,
    tls: Vec<(String, Tls)>,
    /// Tells the accept loops that this is a final stop (see `accept_loop`).
    closing: watch::Sender<bool>,
}

impl Runner {
    /// Listens on every server's socket (inherited when there is one), installs the signal
    /// handlers, reports ready, and starts accepting.
    pub(crate) async fn start(grace: Grace) -> Result<Runner, Error> {
        let pid = std::process::id();
        let Grace {
            net,
            servers,
            stop,
            timeouts,
            upgrade_signal,
            reload_signal,
            stop_signals,
            handle,
            commands,
        } = grace;
        handle
            .metrics()
            .generation
            .store(net.generation(), Ordering::Relaxed);
        let mut names = HashSet::new();
        if let Some(dup) = servers.iter().find(|s| !names.insert(&s.name)) {
            return Err(Error::DuplicateName(dup.name.clone()));
        }
        // Handlers go in before anything is announced: the default action of SIGUSR2 and
        // SIGHUP is to terminate.
        let signals = Signals::install(upgrade_signal, reload_signal, stop_signals)?;
        let listening = listen(&net, servers, timeouts, &handle)?;
        report_ready(&net).await?;
        // Only now: a successor that fails before it commits must not have taken connections
        // with it (the kernel queues them meanwhile, and the parent keeps accepting).
        let mut accepting = JoinSet::new();
        for l in listening.loops {
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
        Ok(Runner {
            drains: Drains::new(listening.drains, handle.clone()),
            net,
            handle,
            commands,
            signals,
            stop,
            tls: listening.tls,
            accepting,
            closing: listening.closing,
            upgrade: None,
            pid,
        })
    }
}

/// Every socket first, so that a server that cannot listen stops the start before anything
/// is announced; then each server's drain, metrics and accept loop.
fn listen(
    net: &Net,
    servers: Vec<Server>,
    timeouts: Timeouts,
    handle: &Handle,
) -> Result<Listening, Error> {
    let mut sockets = Vec::with_capacity(servers.len());
    for s in servers {
        match net.listen(&s.endpoint, Some(&s.name)) {
            Ok((listener, info)) => sockets.push((s, listener, info)),
            Err(source) => {
                return Err(Error::Listen {
                    server: s.name,
                    source,
                });
            }
        }
    }
    let (closing, _) = watch::channel(false);
    let mut listening = Listening {
        loops: Vec::new(),
        drains: Vec::new(),
        tls: Vec::new(),
        closing,
    };
    for (s, listener, info) in sockets {
        let drain = Drain::new();
        let metrics = Arc::new(ServerMetrics::new(s.name.clone(), drain.clone()));
        handle.metrics().add(Arc::clone(&metrics));
        if let Some(t) = &s.tls {
            listening.tls.push((s.name.clone(), t.clone()));
        }
        let ctx = Arc::new(ConnCtx::new(&s, timeouts, metrics));
        let closing = listening.closing.subscribe();
        listening
            .loops
            .push(accept(&s, listener, info, &drain, ctx, closing)?);
        listening.drains.push(drain);
    }
    Ok(listening)
}

/// The accept loop of one server, on its listener registered with the runtime.
fn accept(
    server: &Server,
    listener: Listener,
    info: SocketInfo,
    drain: &Drain,
    ctx: Arc<ConnCtx>,
    closing: watch::Receiver<bool>,
) -> Result<AcceptLoop, Error> {
    let register = |source| Error::Io {
        what: "registering a listener with the runtime",
        source,
    };
    let (accept_loop, shown): (AcceptLoop, String) = match listener {
        Listener::Tcp(l) => {
            let l = tokio::net::TcpListener::from_std(l).map_err(register)?;
            let shown = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            let l = drain.track_listener(l);
            (Box::pin(accept_loop(l, ctx, closing, info.clone())), shown)
        }
        Listener::Unix(l) => {
            let l = tokio::net::UnixListener::from_std(l).map_err(register)?;
            let l = drain.track_listener(l);
            let shown = server.endpoint.to_string();
            (Box::pin(accept_loop(l, ctx, closing, info.clone())), shown)
        }
        _ => {
            return Err(Error::NotAStream {
                server: server.name.clone(),
                endpoint: server.endpoint.to_string(),
            });
        }
    };
    tracing::info!(
        pid = std::process::id(),
        server = %server.name,
        addr = %shown,
        tls = server.tls.is_some(),
        inherited = info.inherited,
        "listening"
    );
    Ok(accept_loop)
}

/// Reports ready: to the parent process, or to systemd (and in the pid file).
async fn report_ready(net: &Arc<Net>) -> Result<(), Error> {
    if net.has_parent() {
        // In place rather than on the blocking pool: eight bytes into the parent's pipe, once,
        // before any accept loop runs. A blocking-pool thread would have to be started for it,
        // which costs more than the call, on the path to serving.
        net.ready().map_err(Error::Ready)
    } else {
        // The pid file and a datagram to systemd: file I/O, off the runtime's threads.
        let ready_net = Arc::clone(net);
        blocking(move || ready_net.ready())
            .await?
            .map_err(Error::Ready)
    }
}
