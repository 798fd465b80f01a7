//! `Net`: what a process knows of its sockets and of its place in the line of generations.
//!
//! The methods of `Net` live with the concept they serve: listening in `listen.rs`, reporting
//! ready in `ready.rs`, the upgrade in `upgrade.rs`, the final stop in `final_stop.rs`. This file
//! holds what they share: the configuration fixed at start-up, and the one mutable [`State`]
//! behind one lock, so no lock order needs keeping. No critical section waits for another
//! process of the upgrade (the new process is started and waited for with the lock released);
//! the ones that do I/O are `listen` (binding a fresh socket), `ready` (the pipe to the parent,
//! or the pid file and a datagram to systemd) and `claim_pid_file`'s rename, each once.

use std::ffi::OsString;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::listen::Pool;
use crate::upgrade::Phase;
use crate::{Builder, Error};

/// The listening sockets of this process: inherited, rebuilt, and handed over.
///
/// A `Net` is created once, early in `main`. It adopts the sockets a parent (or systemd)
/// handed over, answers each `listen_*` call with the matching inherited socket or a fresh
/// one, and on [`upgrade`](Net::upgrade) starts the new binary with all of them.
///
/// `Net` is `Send + Sync`; share it with an `Arc`.
#[derive(Debug)]
pub struct Net {
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: Config,
    /// How many handovers came before this process.
    pub(crate) generation: u64,
    /// A parent of this library started this process and waits for it (`GRACENET_READY_FD`).
    pub(crate) has_parent: bool,
    pub(crate) ignored_listen_pid: Option<u32>,
}

/// What is fixed when the `Net` is built.
#[derive(Debug)]
pub(crate) struct Config {
    /// The listen backlog for fresh stream sockets.
    pub(crate) backlog: i32,
    /// The argument vector of the next process.
    pub(crate) args: Vec<OsString>,
    /// The executable of the next process, or why it could not be resolved.
    pub(crate) exe: Result<PathBuf, String>,
    /// The working directory at start-up: relative paths resolve against it, in this process
    /// and the next.
    pub(crate) cwd: PathBuf,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) ready_timeout: Option<Duration>,
}

/// The part of a `Net` that an upgrade's [`Child`](crate::Child) shares, so that it can settle
/// the upgrade however it ends, even after the `Net` is gone.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Set by [`Net::cancel_upgrade`]; the thread waiting for the new process polls it. Apart
    /// from the lock so that the waiting loop reads it without taking one.
    pub(crate) cancel: AtomicBool,
}

/// Everything about a `Net` that changes after it is built.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The sockets: inherited and not yet claimed, and handed out.
    pub(crate) pool: Pool,
    /// The write end of the readiness pipe, until [`Net::ready`] used it.
    pub(crate) ready_pipe: Option<OwnedFd>,
    /// [`Net::ready`] succeeded.
    pub(crate) ready_done: bool,
    /// [`Net::close`] ran: nothing is handed over any more.
    pub(crate) closed: bool,
    /// [`Net::refuse_upgrades`] ran: this process is stopping and starts no successor.
    pub(crate) refusing: bool,
    /// Where the upgrade stands.
    pub(crate) phase: Phase,
    /// The pid file a committed upgrade replaced, held open until the `Net` is dropped (see
    /// `pidfile::Prepared`).
    pub(crate) replaced_pid_file: Option<fs::File>,
}

impl Shared {
    pub(crate) fn new(state: State) -> Shared {
        Shared {
            state: Mutex::new(state),
            cancel: AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a single assignment, push or remove, so the state is
        // consistent even if a thread panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Net {
    /// A `Net` with the default configuration: see [`Builder::build`].
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn from_env() -> Result<Net, Error> {
        Builder::default().build()
    }

    /// Configures a `Net`.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    /// How many handovers came before this process: 0 for the first, then +1 per upgrade.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a parent process started this one and waits (or waited) for
    /// [`ready`](Net::ready).
    pub fn has_parent(&self) -> bool {
        self.has_parent
    }

    /// The `LISTEN_PID` found in the environment when it named another process: the
    /// variables were left over from an ancestor and were ignored, as libsystemd does.
    pub fn ignored_listen_pid(&self) -> Option<u32> {
        self.ignored_listen_pid
    }

    /// The program an upgrade starts.
    ///
    /// # Errors
    ///
    /// [`Error::Executable`] when `argv[0]` could not be resolved at start-up.
    pub fn executable(&self) -> Result<&Path, Error> {
        self.config
            .exe
            .as_deref()
            .map_err(|reason| Error::Executable {
                name: self
                    .config
                    .args
                    .first()
                    .map(PathBuf::from)
                    .unwrap_or_default(),
                reason: reason.clone(),
            })
    }
}
