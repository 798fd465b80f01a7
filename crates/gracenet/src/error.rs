use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::Kind;

/// Everything that can go wrong in `gracenet`.
///
/// Each variant carries what a person needs to act on it: the variable and its value for a bad
/// environment, the address for a failed bind, the path for a pid file, the pid and exit status
/// for a new process that did not come up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An environment variable of the handover protocol is malformed.
    #[error("invalid environment variable {var}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable, for example `LISTEN_FDS`.
        var: &'static str,
        /// Its value as found (lossily converted to UTF-8).
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An inherited file descriptor is open but is not a socket.
    #[error("inherited fd {fd} (name {name:?}) is not a socket")]
    NotASocket {
        /// The descriptor number.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
    },

    /// An inherited socket could not be inspected or prepared.
    #[error("inherited fd {fd} (name {name:?}): {source}")]
    Inherit {
        /// The descriptor number.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A listener name is not usable in `LISTEN_FDNAMES`.
    #[error("invalid listener name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An inherited socket with the requested name has another kind than requested.
    #[error("inherited socket {name:?} is {found}, but {expected} was requested")]
    KindMismatch {
        /// The listener name.
        name: String,
        /// The kind that was asked for.
        expected: Kind,
        /// The kind of the inherited socket.
        found: Kind,
    },

    /// Creating, binding or listening on a fresh socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address, as written by [`Endpoint`](crate::Endpoint)'s `Display`.
        addr: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The executable for the next process could not be resolved at start-up.
    #[error("cannot resolve the executable {name:?} for restarts: {reason}")]
    Executable {
        /// `argv[0]` or the configured executable.
        name: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The new process could not be started (pipe, clone, or argument preparation failed).
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The executable.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The new process was started but `execve(2)` failed (missing file, not executable, ...).
    #[error("cannot execute {path}: {source}")]
    Exec {
        /// The executable.
        path: PathBuf,
        /// The error `execve(2)` returned in the child.
        source: io::Error,
    },

    /// The new process exited before it reported ready.
    #[error("new process {pid} exited with status {code} before it was ready")]
    ChildExited {
        /// Its pid.
        pid: u32,
        /// Its exit status.
        code: i32,
    },

    /// The new process was killed by a signal before it reported ready.
    #[error("new process {pid} was killed by signal {signal} before it was ready")]
    ChildKilled {
        /// Its pid.
        pid: u32,
        /// The signal name, for example `SIGSEGV`.
        signal: String,
    },

    /// The new process did not report ready in time; it has been killed and reaped.
    #[error("new process {pid} did not report ready within {timeout:?}; it was killed")]
    ReadyTimeout {
        /// Its pid.
        pid: u32,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// Waiting for the new process failed; it has been killed and reaped.
    #[error("waiting for new process {pid} failed: {source}")]
    Wait {
        /// Its pid.
        pid: u32,
        /// The underlying error.
        source: io::Error,
    },

    /// The upgrade was cancelled ([`Net::cancel_upgrade`](crate::Net::cancel_upgrade)); the
    /// new process has been killed and reaped.
    #[error("the upgrade was cancelled; the new process was killed")]
    Cancelled,

    /// Another upgrade is in progress; only one new process is started at a time.
    #[error("an upgrade is already in progress")]
    UpgradeInProgress,

    /// This process already handed its sockets over to a successor; it only drains now.
    #[error("this process already handed over to pid {pid}")]
    Superseded {
        /// The successor's pid.
        pid: u32,
    },

    /// [`Net::close`](crate::Net::close) ran: this process is stopping and hands nothing over.
    #[error("the listeners are closed; this process is stopping")]
    Closed,

    /// [`Net::refuse_upgrades`](crate::Net::refuse_upgrades) ran: this process is stopping and
    /// starts no successor.
    #[error("this process is stopping; it starts no new process")]
    Stopping,

    /// Reporting readiness to the parent process failed.
    #[error("cannot report readiness to the parent process: {source}")]
    Ready {
        /// The underlying error.
        source: io::Error,
    },

    /// Writing or removing the pid file failed.
    #[error("pid file {path}: {source}")]
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A listening socket could not be sealed on a final stop ([`Net::close`](crate::Net::close)).
    #[error("cannot seal listener {name:?} against new connections: {source}")]
    Seal {
        /// The listener name.
        name: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Sending a notification to systemd (`NOTIFY_SOCKET`) failed.
    #[error("systemd notification {state:?} failed: {source}")]
    Notify {
        /// What was being sent, for example `READY=1`.
        state: String,
        /// The underlying error.
        source: io::Error,
    },
}
