//! The drain, connection by connection: HTTP/1.1 requests in flight, idle and silent
//! connections, HTTP/2 streams, and the stop deadline.
//!
//! Each test starts a runner on its own (current-thread) runtime, with real loopback sockets
//! and no signal handlers, and stops it through its `Handle`.

mod util;

use std::time::Duration;

use bytes::Bytes;
use gracehttp::gracedown::ConnHandle;
use gracehttp::{DRAIN_MAX_IDLE_WAIT, DRAIN_MIN_IDLE, Handler, Server, StopTimeouts};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use testkit::http::{Ending, RawClient};
use testkit::{LOCAL, TIMEOUT, metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use util::Gate;

#[tokio::test]
async fn http1_requests_in_flight_complete_with_connection_close() {
    let (mut srv, gate) = util::start_web(|grace| grace).await;
    let addr = srv.tcp("web");

    let mut a = RawClient::connect(addr).await.unwrap();
    let mut b = RawClient::connect(addr).await.unwrap();
    a.send_get("/gate").await.unwrap();
    b.send_get("/gate").await.unwrap();
    gate.wait_entered(2).await;

    srv.stop_and_wait_draining().await;
    gate.release(2);
    for client in [&mut a, &mut b] {
        let res = client.response().await.unwrap();
        assert_eq!(res.status, 200, "{res:?}");
        assert_eq!(res.text(), "web released\n");
        assert_eq!(res.header("connection"), Some("close"), "{res:?}");
        client.assert_clean_eof().await;
    }

    let drained = srv.stopped().await;
    util::assert_drained(&drained, (2, 0, 0));
}

/// Idle keep-alive connections at the drain: one that was busy just before the stop gets
/// `DRAIN_MIN_IDLE` from the drain's start before it is closed (so a request already on its
/// way is answered: the late one here), and none outlives `DRAIN_MAX_IDLE_WAIT`. (The drain
/// starts once the accept loops have stopped, which on a final stop includes their linger for
/// handshakes under way.) Paused time makes "after DRAIN_MIN_IDLE" exact.
#[tokio::test(start_paused = true)]
async fn idle_connections_close_after_min_idle_and_answer_a_late_request() {
    let (mut srv, _gate) = util::start_web(|grace| grace).await;
    let addr = srv.tcp("web");

    let mut just_busy = RawClient::connect(addr).await.unwrap();
    let mut late = RawClient::connect(addr).await.unwrap();
    assert_eq!(just_busy.get("/").await.unwrap().status, 200);
    assert_eq!(late.get("/").await.unwrap().status, 200);
    // Notes when the connection ends, while the test goes on.
    let just_busy = tokio::spawn(async move {
        just_busy.assert_clean_eof().await;
        Instant::now()
    });

    srv.stop_and_wait_draining().await;
    let drain_started = Instant::now();
    // A request right after the drain started, on a connection busy just before: answered
    // (not reset), then the connection is closed cleanly.
    let res = late.get("/").await.unwrap();
    assert_eq!(res.status, 200, "{res:?}");
    late.assert_clean_eof().await;
    assert!(Instant::now() - drain_started <= DRAIN_MAX_IDLE_WAIT);

    let just_busy_closed = timeout(TIMEOUT, just_busy).await.unwrap().unwrap();
    let after_start = just_busy_closed - drain_started;
    assert!(
        after_start >= DRAIN_MIN_IDLE - Duration::from_millis(2)
            && after_start <= DRAIN_MIN_IDLE + Duration::from_millis(20),
        "a connection busy just before the stop is closed DRAIN_MIN_IDLE after the drain \
         started, not after {after_start:?}"
    );
    assert!(just_busy_closed - drain_started <= DRAIN_MAX_IDLE_WAIT);

    let drained = srv.stopped().await;
    util::assert_drained(&drained, (2, 0, 0));
}

/// A connection idle for long when the drain starts still gets `DRAIN_MIN_IDLE` from the
/// drain to deliver a request its client may already have sent, then is closed cleanly, and
/// counts as finished in the outcome like every other connection open when the drain began.
#[tokio::test(start_paused = true)]
async fn a_long_idle_connection_is_closed_after_the_minimum_idle_time_and_counted() {
    let (mut srv, _gate) = util::start_web(|grace| grace).await;

    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);
    // Not synchronisation: the connection is to have been idle for long when the drain starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = tokio::spawn(async move {
        client.assert_clean_eof().await;
        Instant::now()
    });

    srv.stop_and_wait_draining().await;
    let drain_started = Instant::now();
    let closed = timeout(TIMEOUT, closed).await.unwrap().unwrap();
    assert!(
        closed - drain_started >= DRAIN_MIN_IDLE
            && closed - drain_started < DRAIN_MIN_IDLE + Duration::from_millis(5),
        "closed after {:?}",
        closed - drain_started
    );
    let drained = srv.stopped().await;
    util::assert_drained(&drained, (1, 0, 0));
}

/// A request a client sends on a long-idle keep-alive connection just as the drain starts is
/// answered (with `connection: close`), not dropped with the connection.
#[tokio::test(start_paused = true)]
async fn a_request_on_a_long_idle_connection_at_drain_start_is_answered() {
    let (mut srv, _gate) = util::start_web(|grace| grace).await;

    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);
    // Not synchronisation: the connection is to have been idle for long when the drain starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The request goes out once the drain has started (not merely been asked for).
    srv.stop_and_wait_draining().await;
    let reply = client.get("/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    client.assert_clean_eof().await;
    let drained = srv.stopped().await;
    assert_eq!((drained.finished, drained.forced), (1, 0), "{drained:?}");
}

/// A response written while the drain runs says `connection: close`, also when its request
/// arrived after the drain started (on a keep-alive connection, within `DRAIN_MIN_IDLE`) and
/// its handler answers at once: the client must not reuse a connection that is about to close.
#[tokio::test(start_paused = true)]
async fn a_request_that_arrives_during_the_drain_is_answered_with_connection_close() {
    let (mut srv, _gate) = util::start_web(|grace| grace).await;

    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);
    srv.stop_and_wait_draining().await;
    let res = client.get("/").await.unwrap();
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.header("connection"), Some("close"), "{res:?}");
    client.assert_clean_eof().await;
    let drained = srv.stopped().await;
    util::assert_drained(&drained, (1, 0, 0));
}

/// A client that connects and sends nothing cannot hold the drain open.
#[tokio::test(start_paused = true)]
async fn a_silent_connection_does_not_hold_the_drain() {
    let (srv, _gate) = util::start_web(|grace| grace).await;
    let addr = srv.tcp("web");

    let mut silent = RawClient::connect(addr).await.unwrap();
    // Connections are accepted in the order they were made: once this one is answered, the
    // silent one is accepted too.
    let mut other = RawClient::connect(addr).await.unwrap();
    assert_eq!(other.get("/").await.unwrap().status, 200);

    let stopped = Instant::now();
    srv.handle.stop();
    let drained = srv.stopped().await;
    let took = stopped.elapsed();
    assert!(took <= DRAIN_MAX_IDLE_WAIT, "the drain took {took:?}");
    util::assert_drained(&drained, (2, 0, 0));
    // Closed by the server, cleanly: it had been accepted, not left in the backlog.
    silent.assert_clean_eof().await;
    other.assert_clean_eof().await;
}

/// HTTP/2 with prior knowledge, through hyper's client: a stream in flight at the drain
/// completes, and the connection then ends cleanly (the server sent GOAWAY and closed once
/// the stream was done); a new stream on it is refused.
#[tokio::test]
async fn http2_stream_in_flight_completes_and_the_connection_ends() {
    let (mut srv, gate) = util::start_web(|grace| grace).await;
    let addr = srv.tcp("web");

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = timeout(
        TIMEOUT,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)),
    )
    .await
    .expect("handshake in time")
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let request = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let res = timeout(TIMEOUT, sender.send_request(request("/")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);

    let in_flight = tokio::spawn(sender.send_request(request("/gate")));
    gate.wait_entered(1).await;
    srv.stop_and_wait_draining().await;
    gate.release(1);

    let res = timeout(TIMEOUT, in_flight)
        .await
        .expect("the response in time")
        .unwrap()
        .expect("the stream completes");
    assert_eq!(res.status(), 200);
    let body = timeout(TIMEOUT, res.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(body, "web released\n");

    let ended = timeout(TIMEOUT, conn)
        .await
        .expect("the server ends the connection")
        .unwrap();
    assert!(ended.is_ok(), "the connection ends cleanly: {ended:?}");
    let refused = timeout(TIMEOUT, sender.send_request(request("/")))
        .await
        .expect("an answer in time");
    assert!(
        refused.is_err(),
        "a new stream after the drain: {refused:?}"
    );

    let drained = srv.stopped().await;
    util::assert_drained(&drained, (1, 0, 0));
}

/// An HTTP/2 connection whose first request arrives during the drain gets its GOAWAY at once,
/// while that request is still in flight, not a minimum idle time later.
#[tokio::test(start_paused = true)]
async fn http2_first_request_during_the_drain_gets_goaway_at_once() {
    let (mut srv, gate) = util::start_web(|grace| grace).await;
    let mut h2 = RawH2::connect(srv.tcp("web")).await;
    srv.stop_and_wait_draining().await;

    // GET /gate on stream 1, encoded as in the test below.
    let mut block = vec![0x82, 0x86, 0x04, 5];
    block.extend_from_slice(b"/gate");
    block.extend_from_slice(&[0x01, 4]);
    block.extend_from_slice(b"test");
    h2.send(TYPE_HEADERS, 0x5, 1, &block).await;
    gate.wait_entered(1).await;
    let sent = Instant::now();
    loop {
        let frame = h2
            .frame()
            .await
            .expect("a GOAWAY, not the end of the connection");
        assert_ne!(frame.stream, 1, "nothing on the held stream: {frame:?}");
        if frame.kind == TYPE_GOAWAY {
            break;
        }
    }
    assert!(
        sent.elapsed() < DRAIN_MIN_IDLE / 5,
        "GOAWAY {:?} after the first request",
        sent.elapsed()
    );
    gate.release(1);
    while h2.frame().await.is_some() {}
    let drained = srv.stopped().await;
    assert_eq!((drained.forced, drained.stuck), (0, 0), "{drained:?}");
}

/// The same at the frame level: GOAWAY arrives while the stream is still open, the stream is
/// then answered in full, and the server closes the connection.
#[tokio::test]
async fn http2_goaway_comes_before_the_stream_in_flight_ends() {
    let (srv, gate) = util::start_web(|grace| grace).await;
    let mut h2 = RawH2::connect(srv.tcp("web")).await;

    // HEADERS on stream 1, END_STREAM | END_HEADERS: GET /gate. HPACK: :method GET (static 2),
    // :scheme http (6), :path with a literal value (name 4), :authority literal (name 1).
    let mut block = vec![0x82, 0x86, 0x04, 5];
    block.extend_from_slice(b"/gate");
    block.extend_from_slice(&[0x01, 4]);
    block.extend_from_slice(b"test");
    h2.send(TYPE_HEADERS, 0x5, 1, &block).await;
    gate.wait_entered(1).await;

    srv.handle.stop();
    let mut goaways = Vec::new();
    while goaways.is_empty() {
        let frame = h2
            .frame()
            .await
            .expect("a GOAWAY, not the end of the connection");
        assert_ne!(
            frame.stream, 1,
            "nothing on the stream before it is released: {frame:?}"
        );
        if frame.kind == TYPE_GOAWAY {
            goaways.push(frame);
        }
    }

    gate.release(1);
    let mut status_200 = false;
    let mut body = Vec::new();
    let mut stream_ended = false;
    while let Some(frame) = h2.frame().await {
        match frame.kind {
            TYPE_GOAWAY => goaways.push(frame),
            TYPE_HEADERS if frame.stream == 1 => {
                // `:status: 200` is entry 8 of the static table: 0x88 when indexed.
                status_200 = frame.payload.first() == Some(&0x88);
                stream_ended |= frame.flags & 0x1 != 0;
            }
            TYPE_DATA if frame.stream == 1 => {
                body.extend_from_slice(&frame.payload);
                stream_ended |= frame.flags & 0x1 != 0;
            }
            _ => {}
        }
    }
    assert!(status_200, "the stream was answered 200");
    assert_eq!(body, b"web released\n");
    assert!(stream_ended, "the stream ended with END_STREAM");
    for goaway in &goaways {
        let error = u32::from_be_bytes(goaway.payload[4..8].try_into().unwrap());
        assert_eq!(error, 0, "GOAWAY with NO_ERROR: {goaway:?}");
    }
    let last = goaways.last().unwrap();
    let last_stream = u32::from_be_bytes(last.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
    assert!(last_stream >= 1, "the last GOAWAY keeps stream 1: {last:?}");

    let drained = srv.stopped().await;
    util::assert_drained(&drained, (1, 0, 0));
}

/// A handler that never finishes is force-closed at the stop deadline, and the kill deadline
/// bounds the rest: `run()` returns soon after, and the client sees its connection closed.
#[tokio::test]
async fn stop_timeout_force_closes_a_handler_that_never_finishes() {
    let stop = Duration::from_millis(300);
    let (srv, gate) = util::start_web(|grace| {
        grace.stop_timeouts(StopTimeouts {
            stop: Some(stop),
            kill: Some(Duration::from_millis(300)),
        })
    })
    .await;

    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    client.send_get("/never").await.unwrap();
    gate.wait_entered(1).await;

    let stopped = Instant::now();
    srv.handle.stop();
    let drained = srv.stopped().await;
    let took = stopped.elapsed();
    assert!(
        took >= stop,
        "the graceful phase lasts the stop timeout; it took {took:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    util::assert_drained(&drained, (0, 1, 0));

    let ending = client.end().await.unwrap();
    assert!(
        ending.extra.is_empty(),
        "no response: {:?}",
        String::from_utf8_lossy(&ending.extra)
    );
}

/// `force_stop()` does not wait for the stop timeout (here the default 30 s).
#[tokio::test]
async fn force_stop_closes_a_handler_that_never_finishes_at_once() {
    let (srv, gate) = util::start_web(|grace| grace).await;

    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    client.send_get("/never").await.unwrap();
    gate.wait_entered(1).await;

    let stopped = Instant::now();
    srv.handle.force_stop();
    let drained = srv.stopped().await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    util::assert_drained(&drained, (0, 1, 0));
    let ending = client.end().await.unwrap();
    assert!(
        ending.extra.is_empty(),
        "no response: {:?}",
        String::from_utf8_lossy(&ending.extra)
    );
}

/// An echo over an upgraded connection (`connection: upgrade`, `101`). With `polite`, the echo
/// task watches the drain through the request's `ConnHandle` and closes the connection when it
/// starts; without, it ignores the drain.
fn upgrading_echo(polite: bool, gate: &Gate) -> Handler {
    let gate = gate.clone();
    Handler::from_fn(move |mut req: http::Request<Incoming>| {
        let gate = gate.clone();
        async move {
            let conn = req
                .extensions()
                .get::<ConnHandle>()
                .cloned()
                .expect("a ConnHandle");
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = TokioIo::new(upgraded);
                gate.arrive();
                let drained = conn.drained();
                tokio::pin!(drained);
                let mut buf = [0u8; 1024];
                loop {
                    tokio::select! {
                        read = io.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => if io.write_all(&buf[..n]).await.is_err() { return },
                        },
                        () = &mut drained, if polite => {
                            let _ = io.write_all(b"bye\n").await;
                            let _ = io.shutdown().await;
                            return;
                        }
                    }
                }
            });
            let mut res = http::Response::new(gracehttp::full(""));
            *res.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            res.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            res.headers_mut().insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("echo"),
            );
            res
        }
    })
}

/// Opens an upgraded echo connection, and checks that it echoes.
async fn upgraded(srv: &util::Running, gate: &Gate) -> RawClient<TcpStream> {
    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    client
        .write(b"GET /up HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let res = client.response().await.unwrap();
    assert_eq!(res.status, 101, "{res:?}");
    gate.wait_entered(1).await;
    client.write(b"ping\n").await.unwrap();
    let echoed = client.exactly(5).await.unwrap();
    assert_eq!(echoed, b"ping\n");
    client
}

/// An upgraded connection is counted like any other, and one that watches the drain finishes
/// by itself: the drain waits for it, and counts it as finished.
#[tokio::test]
async fn an_upgraded_connection_is_counted_and_told_to_finish() {
    let net = util::net();
    let gate = Gate::new();
    let grace = util::grace(&net).server(Server::tcp("web", LOCAL, upgrading_echo(true, &gate)));
    let srv = util::start(grace, &net).await;
    let mut client = upgraded(&srv, &gate).await;
    let metrics = srv.handle.metrics_text();
    assert_eq!(
        metrics::count(&metrics, r#"gracehttp_connections_active{server="web"}"#),
        Some(1),
        "{metrics}"
    );

    srv.handle.stop();
    let ending = client.end().await.unwrap();
    assert_eq!(
        ending,
        Ending {
            extra: b"bye\n".to_vec(),
            how: Ok(())
        }
    );
    let drained = srv.stopped().await;
    util::assert_drained(&drained, (1, 0, 0));
}

/// An upgraded connection whose task ignores the drain is force-closed at the stop deadline.
#[tokio::test]
async fn an_upgraded_connection_that_ignores_the_drain_is_force_closed() {
    let net = util::net();
    let gate = Gate::new();
    let stop = Duration::from_millis(300);
    let grace = util::grace(&net)
        .stop_timeouts(StopTimeouts {
            stop: Some(stop),
            kill: Some(Duration::from_millis(300)),
        })
        .server(Server::tcp("web", LOCAL, upgrading_echo(false, &gate)));
    let srv = util::start(grace, &net).await;
    let mut client = upgraded(&srv, &gate).await;

    let stopped = Instant::now();
    srv.handle.stop();
    let drained = srv.stopped().await;
    let took = stopped.elapsed();
    assert!(
        took >= stop && took < Duration::from_secs(3),
        "took {took:?}"
    );
    util::assert_drained(&drained, (0, 1, 0));
    let ending = client.end().await.unwrap();
    assert!(ending.extra.is_empty(), "{ending:?}");
}

// ---------------------------------------------------------------------------------------------
// A client that speaks HTTP/2 frames by hand, to see GOAWAY and its place among the frames.

const TYPE_DATA: u8 = 0x0;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_PING: u8 = 0x6;
const TYPE_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

struct RawH2 {
    io: TcpStream,
}

impl RawH2 {
    /// Connects with prior knowledge: the preface and an empty SETTINGS frame.
    async fn connect(addr: std::net::SocketAddr) -> RawH2 {
        let io = TcpStream::connect(addr).await.unwrap();
        let mut h2 = RawH2 { io };
        h2.io
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        h2.send(TYPE_SETTINGS, 0, 0, &[]).await;
        h2
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.io.write_all(&frame).await.unwrap();
    }

    /// The next frame that is not SETTINGS or PING (those are acknowledged, as a client must);
    /// `None` once the server closed the connection.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            let mut head = [0u8; 9];
            let n = timeout(TIMEOUT, self.io.read(&mut head[..1]))
                .await
                .expect("a frame in time")
                .unwrap();
            if n == 0 {
                return None;
            }
            timeout(TIMEOUT, self.io.read_exact(&mut head[1..]))
                .await
                .unwrap()
                .unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            timeout(TIMEOUT, self.io.read_exact(&mut payload))
                .await
                .unwrap()
                .unwrap();
            let frame = Frame {
                kind: head[3],
                flags: head[4],
                stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                payload,
            };
            match frame.kind {
                TYPE_SETTINGS if frame.flags & FLAG_ACK == 0 => {
                    self.send(TYPE_SETTINGS, FLAG_ACK, 0, &[]).await
                }
                TYPE_SETTINGS => {}
                TYPE_PING if frame.flags & FLAG_ACK == 0 => {
                    self.send(TYPE_PING, FLAG_ACK, 0, &frame.payload).await
                }
                _ => return Some(frame),
            }
        }
    }
}
