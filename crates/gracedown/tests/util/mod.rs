//! Helpers shared by the test binaries: in-memory connections, and waits bounded by the test
//! kit's `within` with this crate's own limit.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gracedown::{Accept, Drain, TrackedListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{Mutex, mpsc};

/// The bound on every wait in the tests: longer than the kit's `TIMEOUT`, as the stop and kill
/// deadlines under test add up to 15 s of (paused) time. Under a paused clock a deadlock turns
/// into this timeout firing at once (the clock jumps), so it costs nothing to be generous.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`WAIT`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    testkit::within(WAIT, what, fut).await
}

/// Client side of in-memory connections accepted by a [`duplex_listener`].
#[derive(Debug)]
pub(crate) struct Connector {
    tx: mpsc::UnboundedSender<(DuplexStream, u64)>,
    next: AtomicU64,
}

impl Connector {
    /// Opens a connection; the listener accepts the other end.
    pub(crate) fn connect(&self) -> DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        self.tx.send((server, number)).expect("listener gone");
        client
    }
}

/// A tracked listener over in-memory streams (through `accept_fn`), for tests that run under a
/// paused clock, where real sockets would let the clock jump while the kernel works.
pub(crate) fn duplex_listener(
    drain: &Drain,
) -> (
    TrackedListener<impl Accept<Io = DuplexStream, Addr = u64> + Send + 'static>,
    Connector,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(rx));
    let listener = drain.track_listener(gracedown::accept_fn(move || {
        let rx = Arc::clone(&rx);
        async move {
            rx.lock()
                .await
                .recv()
                .await
                .ok_or_else(|| io::Error::other("connector dropped"))
        }
    }));
    (
        listener,
        Connector {
            tx,
            next: AtomicU64::new(0),
        },
    )
}

/// Reads one byte; `None` on EOF.
pub(crate) async fn read_byte(conn: &mut (impl AsyncReadExt + Unpin)) -> io::Result<Option<u8>> {
    let mut byte = [0u8; 1];
    match conn.read(&mut byte).await? {
        0 => Ok(None),
        _ => Ok(Some(byte[0])),
    }
}

/// Writes one byte.
pub(crate) async fn write_byte(
    conn: &mut (impl AsyncWriteExt + Unpin),
    byte: u8,
) -> io::Result<()> {
    conn.write_all(&[byte]).await
}
