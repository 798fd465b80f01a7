//! Lifecycle events, for programs that act on them.

/// Something that happened in the lifecycle of this process, as sent to
/// [`Handle::subscribe`](crate::Handle::subscribe) receivers. Each is also logged (tracing),
/// with the pid.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Every server accepts; the parent (or systemd) has been told.
    Ready {
        /// This process.
        pid: u32,
        /// 0 for the first process, +1 per handover.
        generation: u64,
    },
    /// An upgrade started: the new binary is starting.
    UpgradeStarted,
    /// An upgrade request came while one was in progress, and was refused.
    UpgradeRefused,
    /// The upgrade failed; this process keeps serving.
    UpgradeFailed {
        /// Why, in one line.
        reason: String,
    },
    /// The new process is ready and serves; this one drains and exits.
    UpgradeDone {
        /// The new process.
        pid: u32,
    },
    /// This process stopped accepting and drains its connections.
    Draining,
    /// The certificate and key of a server were reloaded.
    TlsReloaded {
        /// The server.
        server: String,
    },
    /// A certificate reload failed; the server keeps the certificate it had.
    TlsReloadFailed {
        /// The server.
        server: String,
        /// Why, in one line.
        reason: String,
    },
}
