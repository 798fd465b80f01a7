//! Accepting connections without ever spinning or exiting on errors.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use gracedown::{Accept, TrackedListener};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::{self, ConnCtx};

/// The first pause after a resource error; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What to do about an accept error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// A failure of one connection (it was reset or aborted before we took it): next.
    Skip,
    /// The process or system is out of something (descriptors, memory): pause, then retry.
    Backoff,
}

/// Sorts an accept error, following accept(2): errors that belong to the pending connection
/// are skipped, everything else makes the loop pause so it never spins.
pub(crate) fn classify(e: &io::Error) -> Action {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => return Action::Skip,
        _ => {}
    }
    match e.raw_os_error() {
        // Linux passes network errors of the new connection through accept(2), to be
        // treated like EAGAIN.
        Some(
            libc::EPROTO
            | libc::EPERM
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ENETDOWN
            | libc::ETIMEDOUT,
        ) => Action::Skip,
        _ => Action::Backoff,
    }
}

/// Accepts until the drain starts, serving each connection in its own task (attached to the
/// connection, so a force-close can abort it).
pub(crate) async fn accept_loop<L>(mut listener: TrackedListener<L>, ctx: Arc<ConnCtx>)
where
    L: Accept + Send,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut backoff = Duration::ZERO;
    let drained = listener.drain().drained();
    tokio::pin!(drained);
    while let Some(accepted) = listener.accept().await {
        match accepted {
            Ok((conn, _peer)) => {
                backoff = Duration::ZERO;
                let ctx = Arc::clone(&ctx);
                conn.spawn(move |conn| conn::serve(conn, ctx));
            }
            Err(e) => match classify(&e) {
                Action::Skip => {
                    tracing::debug!(server = %ctx.name, error = %e, "accept: connection failed, skipped")
                }
                Action::Backoff => {
                    backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    tracing::warn!(
                        server = %ctx.name,
                        pid = std::process::id(),
                        error = %e,
                        pause = ?backoff,
                        "accept failed; pausing before the next accept"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut drained => {}
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_errors_are_skipped_and_resource_errors_back_off() {
        for errno in [
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::ENETDOWN,
            libc::EINTR,
            libc::EAGAIN,
        ] {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(errno)),
                Action::Skip,
                "{errno}"
            );
        }
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EBADF,
        ] {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(errno)),
                Action::Backoff,
                "{errno}"
            );
        }
    }
}
