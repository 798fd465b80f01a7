//! Helpers for the in-process tests of gracehttp: the runner started on the test's own runtime
//! with no signal handlers, a gate that holds handlers until the test lets them go, and a raw
//! HTTP/1.1 client that sees exactly what the server sends: the status line, the headers, and
//! how the connection ends (a clean EOF, a reset, or more bytes).
//!
//! Every wait is bounded by [`WAIT`]; nothing sleeps to order events.
#![allow(
    dead_code,
    reason = "each test target uses a different part of the helpers"
)]

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gracehttp::gracedown::Summary;
use gracehttp::gracenet::{Endpoint, Net};
use gracehttp::{Body, Event, Grace, Handle, Handler, Outcome, full};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The bound of every wait: generous for a loaded machine, finite for a broken server. Tests
/// that measure time assert much tighter bounds themselves.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Awaits `f` for at most [`WAIT`].
pub(crate) async fn within<F: std::future::Future>(f: F) -> F::Output {
    timeout(WAIT, f).await.expect("done in time")
}

/// A loopback address with a port the kernel picks.
pub(crate) const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A `Net` that ignores `LISTEN_*` variables: every socket is bound fresh.
pub(crate) fn net() -> Arc<Net> {
    Arc::new(
        Net::builder()
            .inherit(false)
            .build()
            .expect("a Net that inherits nothing"),
    )
}

/// A runner with no signal handlers at all, so that tests running in parallel in one process
/// never compete for a signal; they drive it through its [`Handle`].
pub(crate) fn grace(net: &Arc<Net>) -> Grace {
    Grace::new(Arc::clone(net))
        .stop_signals(false)
        .upgrade_signal(None)
        .reload_signal(None)
}

/// A runner serving on a task of the test's runtime.
pub(crate) struct Running {
    pub(crate) handle: Handle,
    pub(crate) events: broadcast::Receiver<Event>,
    endpoints: HashMap<String, Endpoint>,
    run: JoinHandle<Result<Outcome, gracehttp::Error>>,
}

/// Starts `grace` and waits until it reports [`Event::Ready`]: every server accepts then.
pub(crate) async fn start(grace: Grace, net: &Arc<Net>) -> Running {
    let handle = grace.handle();
    let mut events = handle.subscribe();
    let mut run = tokio::spawn(grace.run());
    let first = timeout(WAIT, async {
        tokio::select! {
            event = events.recv() => event.expect("the event channel"),
            ended = &mut run => panic!("run() ended before it was ready: {ended:?}"),
        }
    })
    .await
    .expect("Ready in time");
    assert!(
        matches!(first, Event::Ready { generation: 0, .. }),
        "first event: {first:?}"
    );
    let endpoints = net
        .listeners()
        .into_iter()
        .filter_map(|l| Some((l.name, l.endpoint?)))
        .collect();
    Running {
        handle,
        events,
        endpoints,
        run,
    }
}

impl Running {
    /// The address the TCP server `name` listens on.
    pub(crate) fn tcp(&self, name: &str) -> SocketAddr {
        match self.endpoints.get(name) {
            Some(Endpoint::Tcp(addr)) => *addr,
            other => panic!("server {name:?} has no TCP address: {other:?}"),
        }
    }

    /// The next event.
    pub(crate) async fn event(&mut self) -> Event {
        timeout(WAIT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the event channel")
    }

    /// Skips events until `want` comes.
    pub(crate) async fn wait_for(&mut self, want: &Event) {
        timeout(WAIT, async {
            loop {
                if self.events.recv().await.expect("the event channel") == *want {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {want:?} in time"));
    }

    /// Stops, and returns once every connection task has seen that the drain started.
    ///
    /// `Draining` is sent just before the drain starts, in the same poll of the runner that
    /// starts it, which wakes every connection task. On the tests' current-thread runtime those
    /// tasks are queued by then, and one yield lets them run (and ask hyper to finish) before
    /// the test goes on; a handler released later then answers on a connection that already
    /// knows it drains.
    pub(crate) async fn stop_and_wait_draining(&mut self) {
        self.handle.stop();
        self.wait_for(&Event::Draining).await;
        tokio::task::yield_now().await;
    }

    /// How `run()` ended.
    pub(crate) async fn outcome(self) -> Outcome {
        timeout(WAIT, self.run)
            .await
            .expect("run() returns in time")
            .expect("the run task")
            .expect("run() succeeds")
    }

    /// `run()` must have ended with [`Outcome::Stopped`]; how the drain went.
    pub(crate) async fn stopped(self) -> Summary {
        match self.outcome().await {
            Outcome::Stopped(drained) => drained,
            other => panic!("expected Stopped, got {other:?}"),
        }
    }
}

/// Holds handlers until the test releases them, and tells the test when they arrive.
#[derive(Clone)]
pub(crate) struct Gate {
    entered: Arc<Semaphore>,
    open: Arc<Semaphore>,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            entered: Arc::new(Semaphore::new(0)),
            open: Arc::new(Semaphore::new(0)),
        }
    }

    /// In a handler: says it arrived, then waits until released.
    pub(crate) async fn pass(&self) {
        self.entered.add_permits(1);
        self.open
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }

    /// In a handler: says it arrived.
    pub(crate) fn arrive(&self) {
        self.entered.add_permits(1);
    }

    /// Waits until `n` more handlers arrived.
    pub(crate) async fn wait_entered(&self, n: u32) {
        timeout(WAIT, self.entered.acquire_many(n))
            .await
            .expect("the handlers arrive in time")
            .expect("the gate is never closed")
            .forget();
    }

    /// Lets `n` handlers through.
    pub(crate) fn release(&self, n: usize) {
        self.open.add_permits(n);
    }
}

/// A text response.
pub(crate) fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res
}

/// The handler most tests serve: `/` answers `hello from NAME`, `/gate` passes `gate` first and
/// answers `NAME released`, `/never` never answers; anything else is 404.
pub(crate) fn routes(name: &'static str, gate: &Gate) -> Handler {
    let gate = gate.clone();
    Handler::from_fn(move |req: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            match req.uri().path() {
                "/" => text(StatusCode::OK, format!("hello from {name}\n")),
                "/gate" => {
                    gate.pass().await;
                    text(StatusCode::OK, format!("{name} released\n"))
                }
                "/never" => {
                    gate.arrive();
                    std::future::pending().await
                }
                _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
            }
        }
    })
}

/// The value of one series (`name{labels}`) in the Prometheus text format.
pub(crate) fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A path in the temporary directory that no other test (of this or another process) uses.
pub(crate) fn temp_path(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("gracehttp-test-{}-{n}-{what}", std::process::id()))
}

/// An HTTP/1.1 response as it came off the wire.
#[derive(Debug)]
pub(crate) struct Res {
    pub(crate) status: u16,
    /// Names in lower case, in order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Res {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ending {
    /// Bytes that came before the end.
    pub(crate) extra: Vec<u8>,
    /// `Ok` for an EOF (the server closed cleanly), else the read error (a reset).
    pub(crate) how: Result<(), io::ErrorKind>,
}

/// A hand-written HTTP/1.1 client: nothing is hidden, retried or pooled.
pub(crate) struct Client<S> {
    io: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    pub(crate) async fn connect(addr: SocketAddr) -> Client<TcpStream> {
        let io = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Client::new(io)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub(crate) fn new(io: S) -> Client<S> {
        Client {
            io,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        timeout(WAIT, self.io.write_all(bytes))
            .await
            .expect("write in time")
    }

    /// Sends `GET path` (keep-alive, the HTTP/1.1 default).
    pub(crate) async fn send_get(&mut self, path: &str) {
        let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        self.write(req.as_bytes()).await.expect("write a request");
    }

    /// Sends `GET path` and reads the response.
    pub(crate) async fn get(&mut self, path: &str) -> Res {
        self.send_get(path).await;
        self.response().await
    }

    /// Reads one complete response; panics if the connection ends first.
    pub(crate) async fn response(&mut self) -> Res {
        timeout(WAIT, self.read_response())
            .await
            .expect("a response in time")
    }

    /// Reads until the connection ends.
    pub(crate) async fn end(&mut self) -> Ending {
        let mut extra = std::mem::take(&mut self.buf);
        let how = timeout(WAIT, async {
            let mut chunk = [0u8; 8192];
            loop {
                match self.io.read(&mut chunk).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => extra.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(e.kind()),
                }
            }
        })
        .await
        .expect("the connection ends in time");
        Ending { extra, how }
    }

    /// Asserts that the server closes the connection cleanly (FIN, no reset) with nothing more
    /// to read.
    pub(crate) async fn assert_clean_eof(&mut self) {
        let ending = self.end().await;
        assert_eq!(
            ending,
            Ending {
                extra: Vec::new(),
                how: Ok(())
            },
            "expected a clean EOF; extra bytes: {:?}",
            String::from_utf8_lossy(&ending.extra)
        );
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.io.read(&mut chunk).await.expect("read a response");
        assert!(
            n > 0,
            "the connection ended in a response; got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            self.fill().await;
        }
    }

    /// Reads exactly `n` bytes (after the responses read so far).
    pub(crate) async fn exactly(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill().await;
        }
        self.buf.drain(..n).collect()
    }

    async fn read_response(&mut self) -> Res {
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        assert_eq!(version, "HTTP/1.1", "status line {status_line:?}");
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("header line {line:?}"));
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut res = Res {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = res.header("content-length") {
            let len = len.parse().expect("a numeric content-length");
            res.body = self.exactly(len).await;
        } else if res.header("transfer-encoding") == Some("chunked") {
            loop {
                let size_line = self.line().await;
                let size = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16).expect("a chunk size");
                if size == 0 {
                    // Trailers, if any, up to the empty line.
                    while !self.line().await.is_empty() {}
                    break;
                }
                let chunk = self.exactly(size + 2).await;
                res.body.extend_from_slice(&chunk[..size]);
            }
        } else {
            assert!(
                matches!(status, 100..=199 | 204 | 304),
                "a response without a length is not something this client reads: {res:?}"
            );
        }
        res
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
