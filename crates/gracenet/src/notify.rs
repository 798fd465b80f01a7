//! systemd's readiness protocol (sd_notify(3)), a no-op without `NOTIFY_SOCKET`.
//!
//! `gracenet` sends these itself at the right moments of an upgrade; they are public for
//! programs that drive their own lifecycle.

use sd_notify::NotifyState;

use crate::Error;

fn send(states: &[NotifyState<'_>]) -> Result<(), Error> {
    sd_notify::notify(states).map_err(|source| Error::Notify {
        state: states
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        source,
    })
}

/// `READY=1`: this process serves.
///
/// # Errors
///
/// [`Error::Notify`] when the datagram cannot be sent.
pub fn ready() -> Result<(), Error> {
    send(&[NotifyState::Ready])
}

/// `RELOADING=1` with `MONOTONIC_USEC`: an upgrade has started.
///
/// # Errors
///
/// [`Error::Notify`] when the clock cannot be read or the datagram cannot be sent.
pub fn reloading() -> Result<(), Error> {
    let now = NotifyState::monotonic_usec_now().map_err(|source| Error::Notify {
        state: "MONOTONIC_USEC".into(),
        source,
    })?;
    send(&[NotifyState::Reloading, now])
}

/// `MAINPID=pid` then `READY=1`: the upgrade completed and `pid` is the service's main
/// process now.
///
/// # Errors
///
/// [`Error::Notify`] when the datagram cannot be sent.
pub fn main_pid(pid: u32) -> Result<(), Error> {
    send(&[NotifyState::MainPid(pid), NotifyState::Ready])
}

/// `STOPPING=1`: this process is shutting down.
///
/// # Errors
///
/// [`Error::Notify`] when the datagram cannot be sent.
pub fn stopping() -> Result<(), Error> {
    send(&[NotifyState::Stopping])
}
