//! Tracked listeners: stop accepting when the drain starts, leave the socket to its other holders.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gracedown::{Drain, StopTimeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use util::{duplex_listener, within};

/// Serves `listener` (echo of one 4-byte message per connection) until it stops accepting;
/// returns how many connections it accepted.
async fn serve(mut listener: gracedown::TrackedListener<TcpListener>) -> usize {
    let mut count = 0;
    while let Some(accepted) = listener.accept().await {
        let (conn, _) = accepted.expect("accept");
        count += 1;
        conn.spawn(|mut conn| async move {
            let mut buf = [0u8; 4];
            if conn.read_exact(&mut buf).await.is_ok() {
                let _ = conn.write_all(&buf).await;
            }
        });
    }
    assert!(
        listener.get_ref().is_none(),
        "our copy of the socket is dropped"
    );
    count
}

async fn echo_once(addr: std::net::SocketAddr, message: &[u8; 4]) -> [u8; 4] {
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client.write_all(message).await.expect("write");
    let mut reply = [0u8; 4];
    client.read_exact(&mut reply).await.expect("read");
    reply
}

/// Two processes sharing one listening socket after a handover, played by two drains over two
/// descriptors of the same socket (a dup, as a child process would inherit).
#[tokio::test]
async fn no_accept_after_drain_and_the_other_holder_keeps_serving() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let dup = std_listener.try_clone().unwrap();

    let old = Drain::new();
    let old_server = tokio::spawn(serve(
        old.track_listener(TcpListener::from_std(std_listener).unwrap()),
    ));
    assert_eq!(
        within("a reply from the old server", echo_once(addr, b"old1")).await,
        *b"old1"
    );
    assert_eq!(old.counters().accepted, 1);

    // The old server drains while parked in accept: the accept wakes up and returns None.
    old.drain();
    assert_eq!(within("the old accept loop", old_server).await.unwrap(), 1);

    // A client connecting now is queued on the shared socket (its connect succeeds: the socket
    // is still listening through the other descriptor), and served by the other holder once it
    // accepts.
    let queued = tokio::spawn(echo_once(addr, b"new1"));
    let new = Drain::new();
    let new_server = tokio::spawn(serve(
        new.track_listener(TcpListener::from_std(dup).unwrap()),
    ));
    assert_eq!(
        within("a reply from the new server", queued).await.unwrap(),
        *b"new1"
    );
    assert_eq!(
        within("another reply", echo_once(addr, b"new2")).await,
        *b"new2"
    );

    assert_eq!(
        old.counters().accepted,
        1,
        "nothing accepted after the drain started"
    );
    assert_eq!(new.counters().accepted, 2);
    let summary = within("the old shutdown", old.shutdown(StopTimeouts::default())).await;
    assert!(summary.is_graceful());

    let summary = within("the new shutdown", new.shutdown(StopTimeouts::default())).await;
    assert!(summary.is_graceful());
    assert_eq!(within("the new accept loop", new_server).await.unwrap(), 2);
}

#[tokio::test]
async fn listener_made_after_the_drain_accepts_nothing() {
    let drain = Drain::new();
    drain.drain();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut listener = drain.track_listener(tcp);
    let _client = TcpStream::connect(addr).await.unwrap();
    assert!(within("accept", listener.accept()).await.is_none());
    assert!(within("accept again", listener.accept()).await.is_none());
    assert_eq!(drain.counters().accepted, 0);
}

#[tokio::test]
async fn the_inner_listener_comes_back_before_the_drain_and_not_after() {
    let drain = Drain::new();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = drain.track_listener(tcp);
    let queued = TcpStream::connect(addr).await.unwrap();
    // Taken back, it still holds what was queued.
    let tcp = listener
        .into_inner()
        .expect("not draining: the listener is still there");
    let (_conn, peer) = within("accept", tcp.accept()).await.unwrap();
    assert_eq!(peer, queued.local_addr().unwrap());

    let mut listener = drain.track_listener(tcp);
    drain.drain();
    assert!(within("accept", listener.accept()).await.is_none());
    assert!(listener.into_inner().is_none(), "dropped at the drain");
}

#[cfg(unix)]
#[tokio::test]
async fn unix_listener_is_tracked() {
    let path = std::env::temp_dir().join(format!("gracedown-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let drain = Drain::new();
    let mut listener = drain.track_listener(tokio::net::UnixListener::bind(&path).unwrap());
    let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut conn, _) = within("accept", listener.accept()).await.unwrap().unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within("read", conn.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!((drain.counters().active, drain.counters().accepted), (1, 1));
    drop(conn);
    assert_eq!((drain.counters().active, drain.counters().finished), (0, 1));
    drain.drain();
    assert!(within("accept", listener.accept()).await.is_none());
    // The path is the application's business, not ours: stopping to accept leaves it in place
    // for whoever else listens on it.
    assert!(path.exists());
    std::fs::remove_file(&path).unwrap();
}

/// An accept function whose future is not cancel safe (it takes the connection, then yields
/// before returning it): the listener keeps the future across cancelled accepts, so nothing
/// is lost.
#[tokio::test(start_paused = true)]
async fn accept_is_cancel_safe_over_an_accept_function() {
    let drain = Drain::new();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut listener = drain.track_listener(gracedown::accept_fn({
        let calls = Arc::clone(&calls);
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let rx = Arc::clone(&rx);
            async move {
                let item = rx.lock().await.recv().await;
                tokio::task::yield_now().await;
                item.map(|n| (n, ()))
                    .ok_or_else(|| std::io::Error::other("closed"))
            }
        }
    }));
    tx.send(7).unwrap();
    // Polled once, then cancelled while the function sits between taking and returning.
    assert!(
        tokio::time::timeout(Duration::ZERO, listener.accept())
            .await
            .is_err()
    );
    let (conn, ()) = within("accept", listener.accept()).await.unwrap().unwrap();
    assert_eq!(*conn.get_ref(), 7);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the same accept resumed, not a new one"
    );

    // A pending accept over the function wakes up when the drain starts.
    let (mut listener, _connector) = duplex_listener(&drain);
    let pending = tokio::spawn(async move { listener.accept().await.is_none() });
    tokio::task::yield_now().await;
    drain.drain();
    assert!(within("the pending accept", pending).await.unwrap());
}
