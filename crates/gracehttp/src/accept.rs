//! Accepting connections without ever spinning or exiting on errors.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use gracedown::{Accept, Tracked, TrackedListener};
use gracenet::{Linger, SocketInfo, StreamListener};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

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
    if e.kind() == io::ErrorKind::WouldBlock || gracenet::is_connection_error(e) {
        Action::Skip
    } else {
        Action::Backoff
    }
}

/// What a final stop needs of a listener beyond [`Accept`]: its `std` form, whose queue
/// gracenet takes ([`gracenet::take_queued`]), and the way back into the runtime for what it
/// takes.
pub(crate) trait Listen: Accept + Sized {
    /// The listener as `std` has it.
    type Std: StreamListener;

    /// Takes the listener out of the runtime.
    fn into_std(self) -> io::Result<Self::Std>;

    /// Registers a connection taken from the queue with the runtime.
    fn register(stream: <Self::Std as StreamListener>::Stream) -> io::Result<Self::Io>;
}

impl Listen for tokio::net::TcpListener {
    type Std = std::net::TcpListener;

    fn into_std(self) -> io::Result<Self::Std> {
        tokio::net::TcpListener::into_std(self)
    }

    fn register(stream: std::net::TcpStream) -> io::Result<Self::Io> {
        tokio::net::TcpStream::from_std(stream)
    }
}

impl Listen for tokio::net::UnixListener {
    type Std = std::os::unix::net::UnixListener;

    fn into_std(self) -> io::Result<Self::Std> {
        tokio::net::UnixListener::into_std(self)
    }

    fn register(stream: std::os::unix::net::UnixStream) -> io::Result<Self::Io> {
        tokio::net::UnixStream::from_std(stream)
    }
}

/// Accepts until the drain starts (a handover: the queue is left to the new process) or until
/// `closing` says this is a final stop. Each connection is served in its own task, attached to
/// the connection so that a force-close can abort it.
///
/// On a final stop, [`Net::close`](gracenet::Net::close) has sealed the socket (when `info`
/// says gracenet bound it) and closed gracenet's copy, so this copy is likely the last:
/// dropping it would reset what is still queued. The loop goes on accepting for the handshakes
/// under way ([`Linger`]), then takes what is left in the queue without waiting, and only then
/// drops the listener. (A socket systemd handed in is not sealed: its queue is taken once, and
/// what comes after stays with systemd if it still holds the socket.)
pub(crate) async fn accept_loop<L>(
    mut listener: TrackedListener<L>,
    ctx: Arc<ConnCtx>,
    mut closing: watch::Receiver<bool>,
    info: SocketInfo,
) where
    L: Listen + Send,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut backoff = Duration::ZERO;
    let drained = listener.drain().drained();
    tokio::pin!(drained);
    let final_stop = async move {
        // The sender lives as long as the runner; without it, there is no final stop to wait for.
        if closing.wait_for(|&closing| closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(final_stop);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut final_stop => break,
            accepted = listener.accept() => accepted,
        };
        let Some(accepted) = accepted else { return };
        serve(accepted, &ctx, &mut backoff, drained.as_mut()).await;
    }
    if let Some(mut linger) = Linger::after_close(&info, Instant::now()) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = tokio::time::sleep_until(linger.deadline()) => break,
                accepted = listener.accept() => accepted,
            };
            let Some(accepted) = accepted else { return };
            serve(accepted, &ctx, &mut backoff, drained.as_mut()).await;
            linger.accepted(Instant::now());
        }
    }
    take_queue(listener, &ctx);
}

/// Takes what is left in the listener's queue, serves it, and closes the listener.
fn take_queue<L>(listener: TrackedListener<L>, ctx: &Arc<ConnCtx>)
where
    L: Listen,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let pid = std::process::id();
    let drain = listener.drain().clone();
    let Some(inner) = listener.into_inner() else {
        return;
    };
    let queue = match inner.into_std() {
        Ok(queue) => queue,
        Err(e) => {
            tracing::warn!(server = %ctx.name, pid, error = %e, "final stop: the queue could not be taken");
            return;
        }
    };
    let mut taken = 0usize;
    for accepted in gracenet::take_queued(queue) {
        match accepted.and_then(L::register) {
            Ok(io) => {
                taken += 1;
                let ctx = Arc::clone(ctx);
                drain.track(io).spawn(move |conn| conn::serve(conn, ctx));
            }
            Err(e) => {
                tracing::warn!(server = %ctx.name, pid, error = %e, "final stop: a queued connection could not be taken")
            }
        }
    }
    if taken > 0 {
        tracing::info!(server = %ctx.name, pid, taken, "final stop: queued connections taken before the listener closed");
    }
}

/// Serves one accepted connection, or pauses after an accept error that is not about one
/// connection (until the pause ends or the drain starts).
async fn serve<Io, Addr>(
    accepted: io::Result<(Tracked<Io>, Addr)>,
    ctx: &Arc<ConnCtx>,
    backoff: &mut Duration,
    drained: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match accepted {
        Ok((conn, _peer)) => {
            *backoff = Duration::ZERO;
            let ctx = Arc::clone(ctx);
            conn.spawn(move |conn| conn::serve(conn, ctx));
        }
        Err(e) => match classify(&e) {
            Action::Skip => {
                tracing::debug!(server = %ctx.name, error = %e, "accept: connection failed, skipped")
            }
            Action::Backoff => {
                *backoff = (*backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                tracing::warn!(
                    server = %ctx.name,
                    pid = std::process::id(),
                    error = %e,
                    pause = ?backoff,
                    "accept failed; pausing before the next accept"
                );
                tokio::select! {
                    () = tokio::time::sleep(*backoff) => {}
                    () = drained => {}
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_errors_are_skipped_and_resource_errors_back_off() {
        let policy = [
            (libc::ECONNABORTED, Action::Skip),
            (libc::EPROTO, Action::Skip),
            (libc::ENETDOWN, Action::Skip),
            (libc::EINTR, Action::Skip),
            // The queue was empty after all: accept again.
            (libc::EAGAIN, Action::Skip),
            (libc::EMFILE, Action::Backoff),
            (libc::ENFILE, Action::Backoff),
            (libc::ENOBUFS, Action::Backoff),
            (libc::ENOMEM, Action::Backoff),
            (libc::EBADF, Action::Backoff),
        ];
        for (errno, action) in policy {
            let error = io::Error::from_raw_os_error(errno);
            assert_eq!(classify(&error), action, "{error}");
        }
    }
}
