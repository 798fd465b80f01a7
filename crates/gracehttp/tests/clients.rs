//! Clients that are slow, idle, silent or send garbage: the timeouts cut them off, and the
//! server keeps serving everyone else. No panic anywhere in the library while it does.

mod util;

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gracehttp::Timeouts;
use testkit::http::RawClient;
use testkit::{TIMEOUT, metrics};
use tokio::time::Instant;

/// Panics that did not come from the tests' own files: a panic in a connection task is caught
/// by tokio and would otherwise go unnoticed.
static LIBRARY_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_library_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info
                .location()
                .is_some_and(|l| l.file().contains("gracehttp/tests/"));
            if !ours {
                LIBRARY_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

fn assert_no_library_panic() {
    assert_eq!(
        LIBRARY_PANICS.load(Ordering::SeqCst),
        0,
        "a panic outside the tests (see stderr)"
    );
}

/// Slowloris: half a request line, then nothing. The header read timeout disconnects the
/// client; a normal client is served meanwhile and afterwards.
#[tokio::test(start_paused = true)]
async fn a_client_stuck_in_its_request_line_is_cut_off_by_the_header_read_timeout() {
    count_library_panics();
    let limit = Duration::from_millis(300);
    let (srv, _gate) =
        util::start_web(|grace| grace.timeouts(Timeouts::default().header_read(Some(limit)))).await;
    let addr = srv.tcp("web");

    let mut slow = RawClient::connect(addr).await.unwrap();
    slow.write(b"GET /slow HT").await.unwrap();
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let ending = slow.end().await.unwrap();
        (ending, Instant::now())
    });

    let mut normal = RawClient::connect(addr).await.unwrap();
    assert_eq!(normal.get("/").await.unwrap().status, 200);

    let (ending, cut) = tokio::time::timeout(TIMEOUT, slow).await.unwrap().unwrap();
    let after = cut - started;
    assert!(
        after >= limit && after <= limit + Duration::from_millis(50),
        "cut off after {after:?}"
    );
    assert!(
        ending.extra.is_empty(),
        "no response: {:?}",
        String::from_utf8_lossy(&ending.extra)
    );

    let mut another = RawClient::connect(addr).await.unwrap();
    assert_eq!(another.get("/").await.unwrap().status, 200);

    srv.handle.stop();
    let drained = srv.stopped().await;
    assert_eq!(drained.forced, 0, "{drained:?}");
    assert_no_library_panic();
}

/// A client that connects and sends nothing has not sent its request's headers within the
/// header read timeout either: it is cut off then, not only at the (here disabled) idle
/// timeout.
#[tokio::test(start_paused = true)]
async fn a_client_that_sends_nothing_is_cut_off_by_the_header_read_timeout() {
    count_library_panics();
    let limit = Duration::from_millis(300);
    let (srv, _gate) = util::start_web(|grace| {
        grace.timeouts(Timeouts::default().header_read(Some(limit)).idle(None))
    })
    .await;
    let addr = srv.tcp("web");

    let mut silent = RawClient::connect(addr).await.unwrap();
    let started = Instant::now();
    // Accepted in order: once this one is answered, the silent one was accepted.
    let mut normal = RawClient::connect(addr).await.unwrap();
    assert_eq!(normal.get("/").await.unwrap().status, 200);

    let ending = tokio::time::timeout(limit + Duration::from_secs(1), silent.end())
        .await
        .unwrap_or_else(|_| {
            panic!("a client that sent nothing is still connected after {limit:?} + 1 s")
        })
        .unwrap();
    let after = started.elapsed();
    assert!(
        after <= limit + Duration::from_millis(50),
        "cut off after {after:?}"
    );
    assert!(ending.extra.is_empty(), "{ending:?}");

    srv.handle.stop();
    let drained = srv.stopped().await;
    assert_eq!(drained.forced, 0, "{drained:?}");
    assert_no_library_panic();
}

/// An idle keep-alive connection is closed, cleanly, once idle for the idle timeout.
#[tokio::test(start_paused = true)]
async fn an_idle_keepalive_connection_is_closed_after_the_idle_timeout() {
    count_library_panics();
    let idle = Duration::from_millis(300);
    let (srv, _gate) =
        util::start_web(|grace| grace.timeouts(Timeouts::default().idle(Some(idle)))).await;

    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);
    // Busy again within the idle timeout: the idle time counts from the last response.
    let res = client.get("/").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), None, "kept alive: {res:?}");
    let last = Instant::now();
    client.assert_clean_eof().await;
    let after = last.elapsed();
    assert!(
        after >= idle - Duration::from_millis(2) && after <= idle + Duration::from_millis(50),
        "closed after {after:?}"
    );

    srv.handle.stop();
    let drained = srv.stopped().await;
    assert_eq!((drained.finished, drained.forced), (0, 0), "{drained:?}");
    assert_no_library_panic();
}

/// A request that takes longer than the idle timeout is not cut off, and the connection's idle
/// time counts from its response.
#[tokio::test(start_paused = true)]
async fn a_request_longer_than_the_idle_timeout_is_answered_and_idle_counts_from_its_end() {
    count_library_panics();
    let idle = Duration::from_millis(300);
    let (srv, gate) =
        util::start_web(|grace| grace.timeouts(Timeouts::default().idle(Some(idle)))).await;

    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    client.send_get("/gate").await.unwrap();
    gate.wait_entered(1).await;
    // Three idle timeouts with the request in flight.
    tokio::time::sleep(idle * 3).await;
    gate.release(1);
    let res = client.response().await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), None, "kept alive: {res:?}");
    let last = Instant::now();
    client.assert_clean_eof().await;
    let after = last.elapsed();
    assert!(
        after >= idle - Duration::from_millis(2) && after <= idle + Duration::from_millis(50),
        "closed {after:?} after the response"
    );

    srv.handle.stop();
    let drained = srv.stopped().await;
    assert_eq!((drained.finished, drained.forced), (0, 0), "{drained:?}");
    assert_no_library_panic();
}

/// Random bytes, malformed requests, an oversized header and a broken HTTP/2 preface: each
/// gets a 4xx response or a closed connection, and the server keeps serving.
#[tokio::test]
async fn garbage_gets_an_error_or_a_close_and_the_server_keeps_serving() {
    count_library_panics();
    let (srv, _gate) = util::start_web(|grace| grace).await;
    let addr = srv.tcp("web");

    // xorshift64: the same "random" bytes every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    };
    let mut h2_garbage = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2_garbage.extend(random(512));
    let mut huge_header = b"GET / HTTP/1.1\r\nhost: test\r\nx-big: ".to_vec();
    huge_header.extend(std::iter::repeat_n(b'a', 512 * 1024));
    huge_header.extend_from_slice(b"\r\n\r\n");
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random(4096)),
        ("zeros", vec![0; 1024]),
        ("not a request line", b"HELLO THERE\r\n\r\n".to_vec()),
        (
            "a header without a colon",
            b"GET / HTTP/1.1\r\nhost: test\r\nno colon here\r\n\r\n".to_vec(),
        ),
        (
            "a bad version",
            b"GET / HTTP/9.9\r\nhost: test\r\n\r\n".to_vec(),
        ),
        (
            "a bad content-length",
            b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: -1\r\n\r\n".to_vec(),
        ),
        ("an HTTP/2 preface, then garbage", h2_garbage),
        ("a header of 512 KiB", huge_header),
    ];
    for (what, payload) in payloads {
        let mut client = RawClient::connect(addr).await.unwrap();
        // The server may close while this is still being written: that is a fine answer too.
        let _ = client.write(&payload).await;
        let ending = client.end().await.unwrap();
        if !ending.extra.is_empty() {
            let text = String::from_utf8_lossy(&ending.extra);
            let status: Option<u16> = text
                .strip_prefix("HTTP/1.1 ")
                .and_then(|s| s.get(..3)?.parse().ok());
            let binary_h2 = what.contains("HTTP/2");
            assert!(
                binary_h2 || status.is_some_and(|s| (400..500).contains(&s)),
                "{what}: expected a 4xx or a close, got {text:?}"
            );
        }
        let mut check = RawClient::connect(addr).await.unwrap();
        assert_eq!(
            check.get("/").await.unwrap().status,
            200,
            "served after {what}"
        );
    }

    let handle = srv.handle.clone();
    handle.stop();
    let drained = srv.stopped().await;
    assert_eq!(drained.forced, 0, "{drained:?}");
    let metrics = handle.metrics_text();
    assert_eq!(
        metrics::count(&metrics, "gracehttp_connections_active{server=\"web\"}"),
        Some(0),
        "{metrics}"
    );
    assert_no_library_panic();
}
