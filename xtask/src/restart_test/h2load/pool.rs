//! The client's connections, pooled as a production client pools them (a few HTTP/2
//! connections, each shared by a few requests in flight, checked before each use and replaced
//! once closing), and one request with the retries the protocol allows.

use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::{self, SendRequest};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use testkit::http::Target;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::retry::{Verdict, chain, classify, io_bucket};

/// Attempts per request, the first included.
const ATTEMPTS: u32 = 5;
/// TCP connect, TLS and HTTP/2 handshakes together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection errors kept as messages.
const KEEP: usize = 10;

type Sender = SendRequest<Empty<Bytes>>;

/// A lost request: its outcome bucket (the names of `Outcomes::bucket` in the harness) and why.
#[derive(Debug)]
pub(super) struct Lost {
    pub(super) bucket: &'static str,
    pub(super) why: String,
}

impl Lost {
    pub(super) fn new(bucket: &'static str, why: impl Into<String>) -> Lost {
        Lost {
            bucket,
            why: why.into(),
        }
    }
}

/// The attempts of one request that failed and were sent again, by cause.
#[derive(Debug, Default)]
pub(super) struct Retries {
    /// Never sent (handed back, or canceled before it was written).
    pub(super) unsent: u64,
    /// Above the last stream id of a GOAWAY.
    pub(super) goaway: u64,
    /// Reset with REFUSED_STREAM.
    pub(super) refused_stream: u64,
    /// Why the first retried attempt failed.
    pub(super) first: Option<String>,
}

#[cfg(test)]
impl Retries {
    pub(super) fn total(&self) -> u64 {
        self.unsent + self.goaway + self.refused_stream
    }
}

/// Where to connect and how: h2c with prior knowledge, or TLS with h2 through ALPN.
#[derive(Debug)]
pub(super) struct Connector {
    target: Target,
    uri: Uri,
}

impl Connector {
    pub(super) fn new(target: Target) -> Result<Connector> {
        let uri = Uri::builder()
            .scheme(target.scheme())
            .authority(target.addr.to_string())
            .path_and_query("/")
            .build()
            .with_context(|| format!("a URI for {}", target.addr))?;
        Ok(Connector { target, uri })
    }

    /// A new HTTP/2 connection; its task goes into `tasks`. A failure loses the request it was
    /// opened for: a restart must never refuse a connection.
    async fn connect(&self, tasks: &mut JoinSet<Option<String>>) -> Result<Sender, Lost> {
        let tls = self.target.scheme() == "https";
        let connecting = async {
            let (io, shown) = self.target.connect().await.map_err(|e| {
                let io = e.downcast_ref::<std::io::Error>();
                // rustls's errors reach tokio-rustls's caller as InvalidData.
                let bucket = match io.map(std::io::Error::kind) {
                    Some(std::io::ErrorKind::InvalidData) if tls => "tls",
                    _ => io.map_or("other", io_bucket),
                };
                Lost::new(bucket, format!("connecting: {e}"))
            })?;
            if tls && shown.alpn.as_deref() != Some(b"h2") {
                let why = "the server did not choose h2 through ALPN";
                return Err(Lost::new("tls", why));
            }
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| Lost::new("other", format!("HTTP/2 handshake: {}", chain(&e))))?;
            tasks.spawn(async move { conn.await.err().map(|e| chain(&e)) });
            Ok(sender)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .unwrap_or_else(|_| Err(Lost::new("timeout", "connecting: timed out")))
    }
}

/// One pooled connection, shared by a few workers.
#[derive(Debug, Default)]
pub(super) struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The connection in use and its number.
    current: Option<(u64, Sender)>,
    /// The connections' tasks; each ends once its connection closed.
    tasks: JoinSet<Option<String>>,
    /// What the connections did so far.
    closed: Closed,
}

impl SlotState {
    /// Counts a connection task that ended: `Some` error, or a clean close.
    fn ended(&mut self, joined: Result<Option<String>, tokio::task::JoinError>) {
        let error = joined.unwrap_or_else(|e| Some(format!("connection task: {e}")));
        if let Some(e) = error {
            self.closed.errors += 1;
            if self.closed.messages.len() < KEEP {
                self.closed.messages.push(e);
            }
        }
    }
}

/// What a slot's connections did.
#[derive(Debug, Default)]
pub(super) struct Closed {
    pub(super) opened: u64,
    /// Connections that ended with an error rather than a clean close.
    pub(super) errors: u64,
    /// The first few of those errors.
    pub(super) messages: Vec<String>,
}

impl Slot {
    /// A sender on a connection that is not closing: the current one after checking it, else
    /// a new one (opened once for all the slot's workers, as a pool does).
    async fn sender(&self, connector: &Connector) -> Result<(u64, Sender), Lost> {
        let mut s = self.state.lock().await;
        if let Some((id, sender)) = &mut s.current {
            if sender.ready().await.is_ok() {
                return Ok((*id, sender.clone()));
            }
        }
        s.current = None;
        while let Some(joined) = s.tasks.try_join_next() {
            s.ended(joined);
        }
        let sender = connector.connect(&mut s.tasks).await?;
        s.closed.opened += 1;
        let id = s.closed.opened;
        s.current = Some((id, sender.clone()));
        Ok((id, sender))
    }

    /// Stops handing out connection `id`: a GOAWAY arrived on it.
    async fn retire(&self, id: u64) {
        let mut s = self.state.lock().await;
        if s.current.as_ref().is_some_and(|(c, _)| *c == id) {
            s.current = None;
        }
    }

    /// Closes the connection and waits (bounded) for every connection task to end.
    pub(super) async fn close(&self) -> Closed {
        let mut s = self.state.lock().await;
        s.current = None;
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(joined) = s.tasks.join_next().await {
                s.ended(joined);
            }
        })
        .await;
        if drained.is_err() {
            s.tasks.shutdown().await;
        }
        std::mem::take(&mut s.closed)
    }
}

/// `GET /` with as many attempts as the protocol allows, up to [`ATTEMPTS`]: a 2xx with
/// gracedemo's body, or lost.
pub(super) async fn request(
    slot: &Slot,
    connector: &Connector,
    retries: &mut Retries,
) -> Result<(), Lost> {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let (id, mut sender) = slot.sender(connector).await?;
        let req = Request::get(connector.uri.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| Lost::new("other", format!("building the request: {e}")))?;
        let (verdict, why) = match sender.try_send_request(req).await {
            Ok(res) => return answer(res).await,
            Err(mut e) => {
                let handed_back = e.take_message().is_some();
                let err = e.into_error();
                (classify(&err, handed_back), chain(&err))
            }
        };
        match verdict {
            Verdict::Unsent => retries.unsent += 1,
            Verdict::Refused { goaway: true } => {
                retries.goaway += 1;
                slot.retire(id).await;
            }
            Verdict::Refused { goaway: false } => retries.refused_stream += 1,
            Verdict::Lost(bucket) => return Err(Lost::new(bucket, why)),
        }
        if retries.first.is_none() {
            retries.first = Some(format!("{verdict:?}: {why}"));
        }
        last = why;
    }
    Err(Lost::new(
        "other",
        format!("refused unprocessed {ATTEMPTS} times; the last: {last}"),
    ))
}

/// Reads a response to its end: a 2xx with gracedemo's body, or lost. A failure once the
/// response has begun is lost whatever it says: the server processed the request.
async fn answer(res: Response<Incoming>) -> Result<(), Lost> {
    let status = res.status();
    let body = match res.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            let bucket = match classify(&e, false) {
                Verdict::Lost(bucket) => bucket,
                Verdict::Unsent | Verdict::Refused { .. } => "other",
            };
            return Err(Lost::new(
                bucket,
                format!("reading the body: {}", chain(&e)),
            ));
        }
    };
    if status != StatusCode::OK {
        return Err(Lost::new("non2xx", format!("status {status}")));
    }
    if !body.starts_with(b"hello from pid") {
        return Err(Lost::new(
            "other",
            format!("unexpected body {:?}", String::from_utf8_lossy(&body)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use h2::Reason;
    use testkit::certs::Ca;
    use testkit::tls::{client_config, server_config};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::super::script::{self, goaway, reset};
    use super::*;

    /// A loopback server that replies `first` to the first request it reads and 200 to every
    /// other, on up to two connections, kept open until the test ends.
    async fn server(first: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            let mut first = Some(first);
            for _ in 0..2 {
                let Ok((mut io, _)) = listener.accept().await else {
                    break;
                };
                let mut reply = first.take();
                conns.spawn(async move {
                    script::greet(&mut io).await;
                    while let Some(id) = script::next_request(&mut io).await {
                        let bytes = reply.take().unwrap_or_else(|| script::ok(id));
                        io.write_all(&bytes).await.unwrap();
                    }
                });
            }
            conns.join_all().await;
        });
        (addr, task)
    }

    /// One request against [`server`]: its outcome, its retries, connections opened.
    async fn one_request(first: Vec<u8>) -> (Result<(), Lost>, Retries, u64) {
        let (addr, task) = server(first).await;
        let connector = Connector::new(Target::plain(addr)).unwrap();
        let (slot, mut retries) = (Slot::default(), Retries::default());
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            request(&slot, &connector, &mut retries),
        )
        .await
        .expect("an outcome in time");
        task.abort();
        let closed = slot.close().await;
        (outcome, retries, closed.opened)
    }

    #[tokio::test]
    async fn a_refused_request_is_sent_again() {
        // Above a GOAWAY's last stream id: again on a new connection.
        let (outcome, retries, conns) = one_request(goaway(0, Reason::NO_ERROR)).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!((retries.goaway, retries.total(), conns), (1, 1, 2));
        // REFUSED_STREAM: the connection itself is fine.
        let (outcome, retries, conns) = one_request(reset(1, Reason::REFUSED_STREAM)).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!((retries.refused_stream, retries.total(), conns), (1, 1, 1));
    }

    #[tokio::test]
    async fn a_request_the_server_may_have_processed_is_not_sent_again() {
        let (outcome, retries, conns) = one_request(reset(1, Reason::INTERNAL_ERROR)).await;
        assert_eq!(outcome.map_err(|l| l.bucket).unwrap_err(), "reset");
        assert_eq!((retries.total(), conns), (0, 1));
    }

    /// How a request whose connection to `target` could not be made was lost.
    async fn unconnected(target: Target) -> Lost {
        let connector = Connector::new(target).unwrap();
        let (slot, mut retries) = (Slot::default(), Retries::default());
        let outcome = request(&slot, &connector, &mut retries).await;
        assert_eq!(retries.total(), 0);
        outcome.unwrap_err()
    }

    #[tokio::test]
    async fn a_connection_refused_or_without_h2_over_tls_loses_the_request() {
        let refused = unconnected(Target::plain(testkit::free_addr())).await;
        assert_eq!(refused.bucket, "refused");
        let (ca, other) = (Ca::new().unwrap(), Ca::new().unwrap());
        // A certificate the client does not trust; then a server that chooses HTTP/1.1.
        for (trusted, alpn, why) in [
            (&other, &b"h2"[..], "connecting"),
            (&ca, b"http/1.1", "ALPN"),
        ] {
            let server = TlsAcceptor::from(server_config(&ca.leaf().unwrap(), &[alpn]).unwrap());
            let listener = TcpListener::bind(testkit::LOCAL).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                server.accept(tcp).await.map(drop)
            });
            let client = client_config(&trusted.der, &[b"h2", b"http/1.1"]).unwrap();
            let lost = unconnected(Target::tls(addr, client)).await;
            assert_eq!(lost.bucket, "tls", "{lost:?}");
            assert!(lost.why.contains(why), "{lost:?}");
            let _ = accepted.await;
        }
    }
}
