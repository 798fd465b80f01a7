//! `Grace`: the servers of a process and how it runs them, start to end.

use std::sync::Arc;

use gracedown::{StopTimeouts, Summary};
use gracenet::Net;
use tokio::signal::unix::SignalKind;
use tokio::sync::mpsc;

use crate::handle::Command;
use crate::runner::{Ended, Runner};
use crate::{Error, Handle, Server, Timeouts};

/// Runs servers that upgrade, stop and reload by signal without losing a request.
///
/// Signals (each configurable): `SIGUSR2` upgrades (the binary at the same path takes over the
/// sockets; this process drains and [`run`](Grace::run) returns [`Outcome::HandedOver`]),
/// `SIGTERM` and `SIGINT` stop gracefully (a second one force-closes what is left), `SIGHUP`
/// reloads the certificates of servers whose TLS comes from PEM files. A [`Handle`] does the
/// same from code.
#[derive(Debug)]
pub struct Grace {
    pub(crate) net: Arc<Net>,
    pub(crate) servers: Vec<Server>,
    pub(crate) stop: StopTimeouts,
    pub(crate) timeouts: Timeouts,
    pub(crate) upgrade_signal: Option<SignalKind>,
    pub(crate) reload_signal: Option<SignalKind>,
    pub(crate) stop_signals: bool,
    pub(crate) handle: Handle,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
}

/// How [`Grace::run`] ended.
///
/// The [`Summary`] of a drain counts the connections of every server together, from the moment
/// the drain began (for a handover, when the new process committed), however many there were.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Stopped by a signal or [`Handle::stop`], after draining.
    Stopped(Summary),
    /// A new process took over the sockets; this one drained.
    HandedOver {
        /// The new process.
        pid: u32,
        /// How the drain went.
        drained: Summary,
    },
}

impl Grace {
    /// A runner whose sockets come from `net` (inherited from a previous version, from systemd,
    /// or bound fresh). Create the `Net` first thing in `main`, before the runtime starts.
    pub fn new(net: Arc<Net>) -> Grace {
        let (handle, commands) = Handle::new();
        Grace {
            net,
            servers: Vec::new(),
            stop: StopTimeouts::default(),
            timeouts: Timeouts::default(),
            upgrade_signal: Some(SignalKind::user_defined2()),
            reload_signal: Some(SignalKind::hangup()),
            stop_signals: true,
            handle,
            commands,
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
        let mut runner = Runner::start(self).await?;
        let (successor, forced) = match runner.serve().await {
            Ended::HandedOver(pid) => (Some(pid), false),
            Ended::Stop { reason, forced } => runner.stop(reason, forced).await,
        };
        if successor.is_none() {
            runner.final_stop().await;
        }
        let drained = runner.drain(forced).await;
        Ok(match successor {
            Some(pid) => Outcome::HandedOver { pid, drained },
            None => Outcome::Stopped(drained),
        })
    }
}
