//! Services that fail: a tower service that returns `Err`, a handler that panics. Each takes
//! down its own connection only; the server goes on serving, stops gracefully, and counts right.

mod util;

use bytes::Bytes;
use gracehttp::{BoxError, Handler, Server};
use http::Response;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use testkit::http::RawClient;
use testkit::{LOCAL, TIMEOUT, metrics, within};
use tokio::net::TcpStream;

fn failing_service() -> Handler {
    Handler::tower(tower::service_fn(
        |req: http::Request<Incoming>| async move {
            match req.uri().path() {
                "/err" => Err::<Response<Full<Bytes>>, BoxError>(
                    "the service failed (as this test wants)".into(),
                ),
                "/panic" => panic!("the handler panicked (as this test wants)"),
                _ => Ok(Response::new(Full::new(Bytes::from_static(b"fine\n")))),
            }
        },
    ))
}

#[tokio::test]
async fn errors_and_panics_close_their_connection_only() {
    let net = util::net();
    let grace = util::grace(&net).server(Server::tcp("web", LOCAL, failing_service()));
    let srv = util::start(grace, &net).await;
    let addr = srv.tcp("web");

    let mut kept = RawClient::connect(addr).await.unwrap();
    assert_eq!(kept.get("/").await.unwrap().text(), "fine\n");

    for path in ["/err", "/panic"] {
        let mut failing = RawClient::connect(addr).await.unwrap();
        failing.send_get(path).await.unwrap();
        let ending = failing.end().await.unwrap();
        // hyper has no response to send for a failed service: the connection just ends.
        assert!(
            ending.extra.is_empty() || ending.extra.starts_with(b"HTTP/1.1 5"),
            "{path}: no success on a failed request: {:?}",
            String::from_utf8_lossy(&ending.extra)
        );
        // The keep-alive connection opened before is unaffected, and new ones are served.
        assert_eq!(
            kept.get("/").await.unwrap().text(),
            "fine\n",
            "after {path}"
        );
        let mut fresh = RawClient::connect(addr).await.unwrap();
        assert_eq!(
            fresh.get("/").await.unwrap().text(),
            "fine\n",
            "after {path}"
        );
    }

    let handle = srv.handle.clone();
    handle.stop();
    let drained = srv.stopped().await;
    // Open at the drain: `kept` and the last `fresh` (the others ended or were dropped by now).
    assert_eq!(drained.forced, 0, "{drained:?}");
    assert_eq!(drained.stuck, 0, "{drained:?}");
    let metrics = handle.metrics_text();
    let web = |family: &str| metrics::count(&metrics, &format!("{family}{{server=\"web\"}}"));
    assert_eq!(web("gracehttp_connections_active"), Some(0), "{metrics}");
    // kept, two failing, two fresh.
    assert_eq!(
        web("gracehttp_connections_accepted_total"),
        Some(5),
        "{metrics}"
    );
    // kept: 3, each failing: 1, each fresh: 1.
    assert_eq!(web("gracehttp_requests_total"), Some(7), "{metrics}");
}

/// The same in HTTP/2: a panic or an error ends that stream, not the connection's other streams.
#[tokio::test]
async fn a_failed_http2_stream_leaves_the_connection_serving() {
    let net = util::net();
    let grace = util::grace(&net).server(Server::tcp("web", LOCAL, failing_service()));
    let srv = util::start(grace, &net).await;
    let addr = srv.tcp("web");

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = within(
        TIMEOUT,
        "the HTTP/2 handshake",
        http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let request = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    for path in ["/panic", "/err"] {
        let failed = within(
            TIMEOUT,
            "a failing request",
            sender.send_request(request(path)),
        )
        .await;
        // A reset stream, or a 5xx: anything but success.
        assert!(
            failed.as_ref().is_ok_and(|r| r.status().is_server_error()) || failed.is_err(),
            "{path}: {failed:?}"
        );
        let ok = within(TIMEOUT, "a response", sender.send_request(request("/")))
            .await
            .unwrap();
        let body = within(TIMEOUT, "its body", ok.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "fine\n", "after {path}");
    }

    srv.handle.stop();
    let drained = srv.stopped().await;
    util::assert_drained(&drained, (1, 0, 0));
    assert!(
        within(TIMEOUT, "the end of the connection", conn)
            .await
            .unwrap()
            .is_ok(),
        "the connection ends cleanly"
    );
}
