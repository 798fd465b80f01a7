//! Accepting connections without ever spinning or exiting on errors.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use gracedown::{Accept, Tracked, TrackedListener};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

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

/// After a final stop sealed a TCP socket, its accept loop goes on accepting until no connection
/// has come for this long. The seal drops new SYNs but lets the handshakes already under way
/// complete: within a round trip, or, when the queue was full and the kernel dropped the
/// client's last ACK, when the client retransmits (200 ms at the least). The cost: a client
/// whose SYN is dropped meanwhile retries after a second and is refused then, not at once.
const TCP_LINGER_QUIET: Duration = Duration::from_millis(250);
/// The linger ends after this long in any case.
const TCP_LINGER_MAX: Duration = Duration::from_secs(1);

/// At most this many connections are taken from a queue at a final stop: more than any
/// backlog holds (`somaxconn` is 4096 by default), and a bound should the socket not be sealed
/// (one systemd handed in) and new connections keep coming.
const MAX_QUEUED: usize = 65_536;

/// What a final stop needs of a listener beyond [`Accept`].
pub(crate) trait Listen: Accept + Sized {
    /// Whether connections can be under way (a TCP handshake) when the socket is sealed, and
    /// still complete into the queue afterwards.
    const HANDSHAKES: bool;

    /// Accepts what is left in the kernel's queue without waiting, handing each connection
    /// (or the error that ended the taking) to `each`, and closes this copy of the socket.
    fn accept_queued(self, each: &mut dyn FnMut(io::Result<Self::Io>)) -> io::Result<()>;
}

impl Listen for tokio::net::TcpListener {
    const HANDSHAKES: bool = true;

    fn accept_queued(self, each: &mut dyn FnMut(io::Result<Self::Io>)) -> io::Result<()> {
        // Out of the runtime's hands: a plain accept(2) answers `WouldBlock` exactly when the
        // queue is empty, where the runtime's readiness may lag behind the kernel.
        let listener = self.into_std()?;
        take_queued(
            || listener.accept().map(|(stream, _)| stream),
            |stream| {
                stream.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(stream)
            },
            each,
        );
        Ok(())
    }
}

impl Listen for tokio::net::UnixListener {
    // A unix connect is queued at once, or refused once sealed: nothing is under way.
    const HANDSHAKES: bool = false;

    fn accept_queued(self, each: &mut dyn FnMut(io::Result<Self::Io>)) -> io::Result<()> {
        let listener = self.into_std()?;
        take_queued(
            || listener.accept().map(|(stream, _)| stream),
            |stream| {
                stream.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(stream)
            },
            each,
        );
        Ok(())
    }
}

/// Accepts with `accept` until the queue is empty, converting each connection for the runtime.
fn take_queued<S, T>(
    mut accept: impl FnMut() -> io::Result<S>,
    convert: impl Fn(S) -> io::Result<T>,
    each: &mut dyn FnMut(io::Result<T>),
) {
    for _ in 0..MAX_QUEUED {
        match accept() {
            Ok(stream) => each(convert(stream)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if classify(&e) == Action::Skip => {}
            Err(e) => return each(Err(e)),
        }
    }
}

/// Accepts until the drain starts (a handover: the queue is left to the new process) or until
/// `closing` says this is a final stop. Each connection is served in its own task, attached to
/// the connection so that a force-close can abort it.
///
/// On a final stop, [`Net::close`](gracenet::Net::close) has closed gracenet's copy of the
/// socket, so this copy is likely the last: dropping it would reset what is still queued. When
/// the socket was `sealed` (gracenet bound it, so nobody else holds it), no new connection is
/// queued any more: a TCP loop goes on accepting until [`TCP_LINGER_QUIET`] passes without a
/// connection (handshakes under way complete). Then the loop takes what is left in the queue
/// without waiting, and only then drops the listener. (A socket systemd handed in is not
/// sealed: its queue is taken once, and what comes after stays with systemd if it still holds
/// the socket.)
pub(crate) async fn accept_loop<L>(
    mut listener: TrackedListener<L>,
    ctx: Arc<ConnCtx>,
    mut closing: watch::Receiver<bool>,
    sealed: bool,
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

    if sealed && L::HANDSHAKES {
        let start = tokio::time::Instant::now();
        let quiet = tokio::time::sleep(TCP_LINGER_QUIET);
        let end = tokio::time::sleep_until(start + TCP_LINGER_MAX);
        tokio::pin!(quiet, end);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut quiet => break,
                () = &mut end => break,
                accepted = listener.accept() => accepted,
            };
            let Some(accepted) = accepted else { return };
            serve(accepted, &ctx, &mut backoff, drained.as_mut()).await;
            quiet
                .as_mut()
                .reset(tokio::time::Instant::now() + TCP_LINGER_QUIET);
        }
    }
    let drain = listener.drain().clone();
    let Some(inner) = listener.into_inner() else {
        return;
    };
    let mut taken = 0usize;
    let result = inner.accept_queued(&mut |accepted| match accepted {
        Ok(io) => {
            taken += 1;
            let ctx = Arc::clone(&ctx);
            drain.track(io).spawn(move |conn| conn::serve(conn, ctx));
        }
        Err(e) => {
            tracing::warn!(server = %ctx.name, pid = std::process::id(), error = %e, "final stop: a queued connection could not be taken")
        }
    });
    if let Err(e) = result {
        tracing::warn!(server = %ctx.name, pid = std::process::id(), error = %e, "final stop: the queue could not be taken");
    }
    if taken > 0 {
        tracing::info!(server = %ctx.name, pid = std::process::id(), taken, "final stop: queued connections taken before the listener closed");
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

    /// Connects `n` clients, each of which sends its number; returns them.
    async fn queue_clients<S, F, Fut>(n: u8, connect: F) -> Vec<S>
    where
        S: tokio::io::AsyncWrite + Unpin,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = io::Result<S>>,
    {
        use tokio::io::AsyncWriteExt;
        let mut clients = Vec::new();
        for i in 0..n {
            let mut c = connect().await.unwrap();
            c.write_all(&[i]).await.unwrap();
            clients.push(c);
        }
        clients
    }

    /// Reads one byte from each taken connection: together, every client's number once.
    async fn numbers<S: tokio::io::AsyncRead + Unpin>(taken: Vec<io::Result<S>>) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut seen = Vec::new();
        for conn in taken {
            let mut conn = conn.unwrap();
            seen.push(conn.read_u8().await.unwrap());
        }
        seen.sort_unstable();
        seen
    }

    #[tokio::test]
    async fn a_tcp_queue_is_taken_whole_and_the_port_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _clients = queue_clients(3, || tokio::net::TcpStream::connect(addr)).await;
        let mut taken = Vec::new();
        listener.accept_queued(&mut |c| taken.push(c)).unwrap();
        assert_eq!(numbers(taken).await, [0, 1, 2]);
        let closed = tokio::net::TcpStream::connect(addr).await.map(|_| ());
        assert_eq!(
            closed.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionRefused)
        );
    }

    #[tokio::test]
    async fn a_unix_queue_is_taken_whole() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("grace-queue-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::UnixListener::from_std(std_listener).unwrap();
        let _clients = queue_clients(2, || async {
            let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
            s.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(s)
        })
        .await;
        let mut taken = Vec::new();
        listener.accept_queued(&mut |c| taken.push(c)).unwrap();
        assert_eq!(numbers(taken).await, [0, 1]);
    }

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
