//! The final stop: closing the listening sockets without resetting a queued connection.
//!
//! Closing the last copy of a listening socket resets every connection still waiting in its
//! queue, and under load there always are some. So a final stop goes in three steps:
//!
//! 1. [`Net::close`] *seals* each socket only this line of processes holds, so that no new
//!    connection is queued, and closes gracenet's copies.
//! 2. The application goes on accepting on a sealed TCP socket for a moment ([`Linger`]): the
//!    handshakes already under way complete into the queue.
//! 3. It takes what is left in the queue without waiting ([`take_queued`]), serves it like any
//!    other connection, and drops its listener, the last copy: the port closes empty.
//!
//! The waiting of step 2 is the application's, in its own runtime; [`Linger`] only says until
//! when.

use std::fs;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::ops::Add;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::listen::Active;
use crate::upgrade::{Phase, cancel_starting};
use crate::{Endpoint, Error, Kind, Net, SocketInfo, is_connection_error, pidfile, sys};

/// After [`Net::close`] sealed a TCP socket, accepting goes on until no connection has come
/// for this long: the seal drops new SYNs but lets handshakes already under way complete,
/// within a round trip, or, when the queue was full and the kernel dropped the client's last
/// ACK, when the client retransmits it (200 ms at the least).
pub const LINGER_QUIET: Duration = Duration::from_millis(250);

/// The linger after [`Net::close`] ends after this long in any case.
pub const LINGER_MAX: Duration = Duration::from_secs(1);

/// At most this many connections are taken from one queue: more than any backlog holds
/// (`somaxconn` is 4096 by default), and a bound should the socket not be sealed (one systemd
/// handed in) and new connections keep coming.
const MAX_QUEUED: usize = 65_536;

impl Net {
    /// For a final stop (not a handover): seals the listening sockets that only this line of
    /// processes holds, closes this `Net`'s copies of every socket, removes the socket files of
    /// its unix listeners that this library created (a file systemd or another program created
    /// is left to them), and the pid file if it still names this process.
    ///
    /// A sealed socket takes no new connection: a TCP client's SYN goes unanswered (it retries
    /// a second later and is refused then, once the socket has closed), a unix client is
    /// refused at once. Connections already queued, and for TCP those whose handshake is under
    /// way, can still be accepted from the application's copy. So after `close`, the
    /// application accepts for a moment more on a TCP socket ([`Linger`]), takes what is left
    /// ([`take_queued`]), serves it, and only then drops its listener, which closes the port.
    ///
    /// A socket that systemd or another program handed in (here or to a predecessor) is not
    /// sealed, since they may hand it to the next instance; it stays open there, its queue with
    /// it ([`SocketInfo::bound`] tells which are sealed). Nor is anything sealed while an
    /// upgrade is in progress (its new process holds the sockets), nor by a new process before
    /// it has reported [`ready`](Net::ready): its parent still serves on them, and goes on
    /// serving if this process fails. Upgrades are refused after `close` with
    /// [`Error::Closed`], and one in progress is cancelled: its new process can no longer take
    /// over. After a handover, never call this: the sockets and files belong to the new
    /// process.
    ///
    /// # Errors
    ///
    /// [`Error::Seal`] when a socket could not be sealed (the first such failure), and
    /// [`Error::PidFile`] when the pid file cannot be read or removed. Either way, every socket
    /// is closed and the socket files are removed.
    pub fn close(&self) -> Result<(), Error> {
        let (active, sealing) = {
            let mut st = self.state();
            st.closed = true;
            // With `closed` set, no upgrade can start any more; one started before is cancelled
            // (it can no longer commit), and holds the phase until its new process is gone.
            cancel_starting(&self.shared, &st);
            let idle = st.phase == Phase::Idle;
            // A process whose parent waits for it has not been committed to before it says
            // ready: the parent still serves on these sockets, and goes on if this one fails.
            let committed = !self.has_parent || st.ready_done;
            (st.pool.take_all(), idle && committed)
        };
        let sealed = if sealing { seal(&active) } else { Ok(()) };
        remove_socket_files(&active, &self.config.cwd);
        drop(active);
        let pid_file = match &self.config.pid_file {
            Some(path) => pidfile::remove(path, std::process::id()),
            None => Ok(()),
        };
        sealed.and(pid_file)
    }
}

/// Seals every socket a process of this library bound; returns the first failure.
fn seal(active: &[Active]) -> Result<(), Error> {
    let mut sealed = Ok(());
    for a in active.iter().filter(|a| a.info.bound) {
        if let Err(source) = sys::seal(&a.socket, a.info.kind) {
            if sealed.is_ok() {
                sealed = Err(Error::Seal {
                    name: a.info.name.clone(),
                    source,
                });
            }
        }
    }
    sealed
}

/// Removes the files of the unix sockets a process of this library created.
fn remove_socket_files(active: &[Active], cwd: &Path) {
    for a in active.iter().filter(|a| a.owns_file) {
        if let Some(Endpoint::Unix(path)) = &a.info.endpoint {
            let path = cwd.join(path);
            // Only a socket: anything else at that path is not ours to remove.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// How long a final stop goes on accepting on one listener after [`Net::close`], for the TCP
/// handshakes under way: until [`LINGER_QUIET`] passes without a connection, and at most
/// [`LINGER_MAX`].
///
/// It only computes instants; the waiting is the caller's, with its own clock and runtime:
/// `I` is [`std::time::Instant`], `tokio::time::Instant`, or any instant type that adds a
/// [`Duration`]. With tokio, as `examples/echo.rs` does:
///
/// ```ignore
/// if let Some(mut linger) = gracenet::Linger::after_close(&info, Instant::now()) {
///     while let Ok(accepted) = tokio::time::timeout_at(linger.deadline(), listener.accept()).await {
///         linger.accepted(Instant::now());
///         // serve `accepted`
///     }
/// }
/// for conn in gracenet::take_queued(listener.into_std()?) {
///     // register `conn` with the runtime and serve it
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger<I> {
    quiet_until: I,
    end: I,
}

impl<I> Linger<I>
where
    I: Copy + Ord + Add<Duration, Output = I>,
{
    /// The linger of a socket described by `info`, starting `now`, right after [`Net::close`].
    /// `None` when there is nothing to wait for: a unix socket (a connection is queued at once,
    /// or refused once sealed), or one that [`Net::close`] never seals (`bound` is false: a
    /// socket systemd or another program handed in). A bound socket that `close` left unsealed
    /// (an upgrade was in progress, or sealing failed) lingers all the same, for
    /// [`LINGER_MAX`] at most.
    #[must_use]
    pub fn after_close(info: &SocketInfo, now: I) -> Option<Linger<I>> {
        (info.bound && info.kind == Kind::Tcp).then(|| Linger {
            quiet_until: now + LINGER_QUIET,
            end: now + LINGER_MAX,
        })
    }

    /// Until when to go on accepting: [`LINGER_QUIET`] after the start or the last connection,
    /// never past [`LINGER_MAX`] after the start.
    #[must_use]
    pub fn deadline(&self) -> I {
        self.quiet_until.min(self.end)
    }

    /// A connection came `now`: wait for quiet again.
    pub fn accepted(&mut self, now: I) {
        self.quiet_until = now + LINGER_QUIET;
    }
}

mod sealed {
    /// Only the listeners of this module are [`StreamListener`](super::StreamListener)s.
    pub trait Sealed {}
    impl Sealed for std::net::TcpListener {}
    impl Sealed for std::os::unix::net::UnixListener {}
}

/// A listening stream socket whose queue [`take_queued`] can take: [`TcpListener`] and
/// [`UnixListener`].
pub trait StreamListener: sealed::Sealed {
    /// A connection taken from the queue.
    type Stream;

    /// Accepts one connection; without waiting, as the listener is nonblocking.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the queue is empty, and what accept(2) returns.
    fn accept_one(&self) -> io::Result<Self::Stream>;

    /// Makes a connection taken from the queue nonblocking.
    ///
    /// # Errors
    ///
    /// What `fcntl(2)` returns.
    fn set_nonblocking(stream: &Self::Stream) -> io::Result<()>;
}

impl StreamListener for TcpListener {
    type Stream = TcpStream;

    fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().map(|(stream, _)| stream)
    }

    fn set_nonblocking(stream: &TcpStream) -> io::Result<()> {
        stream.set_nonblocking(true)
    }
}

impl StreamListener for UnixListener {
    type Stream = UnixStream;

    fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().map(|(stream, _)| stream)
    }

    fn set_nonblocking(stream: &UnixStream) -> io::Result<()> {
        stream.set_nonblocking(true)
    }
}

/// Takes what is left in a listener's queue, without waiting, and then closes the listener:
/// the last step of a final stop (see [`Net::close`]).
///
/// The iterator yields each queued connection, nonblocking (ready for
/// `tokio::net::TcpStream::from_std` and friends), until the queue is empty. An accept error
/// that belongs to one connection ([`is_connection_error`]) is skipped, one that does not is
/// yielded and ends the taking; a connection that cannot be made nonblocking is yielded as an
/// error (and closed), and the taking goes on. The listener is closed when the queue is found
/// empty, after an accept error, or when the iterator is dropped. An accept error that is not
/// one connection's (`EMFILE`, `ENFILE`, `ENOBUFS`) ends the taking and closes the listener
/// with whatever is still queued: out of descriptors, nothing more could be taken.
///
/// Use the `std` listener, not the runtime's: a plain nonblocking accept(2) answers
/// `WouldBlock` exactly when the queue is empty, where a runtime's readiness may lag behind
/// the kernel's queue (tokio's listeners give theirs back with `into_std`).
pub fn take_queued<L: StreamListener>(listener: L) -> Queued<L> {
    Queued {
        listener: Some(listener),
        left: MAX_QUEUED,
    }
}

/// The connections left in a listener's queue: see [`take_queued`].
#[derive(Debug)]
#[must_use = "the queue is taken as the iterator is consumed; dropped, it closes the listener"]
pub struct Queued<L> {
    /// `None` once the taking ended: the listener is closed then.
    listener: Option<L>,
    left: usize,
}

impl<L: StreamListener> Iterator for Queued<L> {
    type Item = io::Result<L::Stream>;

    fn next(&mut self) -> Option<Self::Item> {
        let listener = self.listener.as_ref()?;
        while self.left > 0 {
            self.left -= 1;
            match listener.accept_one() {
                Ok(stream) => return Some(L::set_nonblocking(&stream).map(|()| stream)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    self.listener = None;
                    return Some(Err(e));
                }
            }
        }
        self.listener = None;
        None
    }
}

impl<L: StreamListener> std::iter::FusedIterator for Queued<L> {}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::time::Instant;

    use super::*;

    /// Connects `n` clients, each of which sends its number; returns them.
    fn queue_clients<S: Write>(n: u8, connect: impl Fn() -> io::Result<S>) -> Vec<S> {
        (0..n)
            .map(|i| {
                let mut c = connect().unwrap();
                c.write_all(&[i]).unwrap();
                c
            })
            .collect()
    }

    /// Reads one byte from each taken connection: together, every client's number once.
    fn numbers<S: Read>(taken: impl Iterator<Item = io::Result<S>>) -> Vec<u8> {
        let mut seen: Vec<u8> = taken
            .map(|conn| {
                let mut conn = conn.unwrap();
                let mut byte = [0u8];
                // Nonblocking: the byte was sent before the connection was taken, but may
                // still be on its way through loopback.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match conn.read(&mut byte) {
                        Ok(1) => return byte[0],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            assert!(Instant::now() < deadline, "no byte from a taken client");
                            std::thread::yield_now();
                        }
                        other => panic!("read {other:?}"),
                    }
                }
            })
            .collect();
        seen.sort_unstable();
        seen
    }

    #[test]
    fn a_tcp_queue_is_taken_whole_and_the_port_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let _clients = queue_clients(3, || TcpStream::connect(addr));
        assert_eq!(numbers(take_queued(listener)), [0, 1, 2]);
        let closed = TcpStream::connect(addr).map(|_| ());
        assert_eq!(
            closed.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionRefused)
        );
    }

    #[test]
    fn a_unix_queue_is_taken_whole() {
        let name = format!("gracenet-queue-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let _clients = queue_clients(2, || UnixStream::connect_addr(&addr));
        let taken: Vec<_> = take_queued(listener).collect();
        assert!(taken.iter().all(|c| c.is_ok()));
        assert_eq!(numbers(taken.into_iter()), [0, 1]);
        // The listener was closed once the queue was found empty.
        assert!(UnixStream::connect_addr(&addr).is_err());
    }

    #[test]
    fn the_linger_waits_for_quiet_and_ends_at_the_latest_after_the_maximum() {
        let info = |kind, bound| SocketInfo {
            name: "web".into(),
            kind,
            endpoint: None,
            inherited: false,
            bound,
        };
        let start = Instant::now();
        assert!(Linger::after_close(&info(Kind::Tcp, false), start).is_none());
        assert!(Linger::after_close(&info(Kind::UnixStream, true), start).is_none());
        let mut linger = Linger::after_close(&info(Kind::Tcp, true), start).unwrap();
        assert_eq!(linger.deadline(), start + LINGER_QUIET);
        let later = start + Duration::from_millis(200);
        linger.accepted(later);
        assert_eq!(linger.deadline(), later + LINGER_QUIET);
        linger.accepted(start + Duration::from_millis(900));
        assert_eq!(linger.deadline(), start + LINGER_MAX);
    }
}
