//! The two deadlines of `Drain::shutdown`: finish inside the stop timeout, force-close at it,
//! report what is still stuck at the kill timeout.

mod util;

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use gracedown::{Drain, StopTimeouts};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use util::{WAIT, duplex_listener, read_byte, within, write_byte};

const STOP: Duration = Duration::from_secs(10);
const KILL: Duration = Duration::from_secs(5);
const TIMEOUTS: StopTimeouts = StopTimeouts {
    stop: Some(STOP),
    kill: Some(KILL),
};

#[tokio::test(start_paused = true)]
async fn in_flight_connection_finishes_inside_stop_timeout() {
    let drain = Drain::new();
    let (mut listener, connector) = duplex_listener(&drain);
    let started = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let server = tokio::spawn({
        let (started, gate) = (Arc::clone(&started), Arc::clone(&gate));
        async move {
            let mut accepted_count = 0;
            while let Some(accepted) = listener.accept().await {
                let (conn, _) = accepted.expect("accept");
                accepted_count += 1;
                let (started, gate) = (Arc::clone(&started), Arc::clone(&gate));
                conn.spawn(move |mut conn| async move {
                    let request = read_byte(&mut conn)
                        .await
                        .expect("read")
                        .expect("a request");
                    started.notify_one();
                    gate.notified().await;
                    write_byte(&mut conn, request + 1).await.expect("write");
                });
            }
            accepted_count
        }
    });

    let mut client = connector.connect();
    write_byte(&mut client, 41).await.unwrap();
    within("the request to start", started.notified()).await;

    let t0 = Instant::now();
    let shutdown = tokio::spawn({
        let drain = drain.clone();
        async move { drain.shutdown(TIMEOUTS).await }
    });
    within("the drain to start", drain.drained()).await;
    assert_eq!(within("the accept loop to end", server).await.unwrap(), 1);
    let counters = drain.counters();
    assert_eq!(
        (counters.active, counters.finished, counters.forced),
        (1, 0, 0)
    );

    gate.notify_one();
    assert_eq!(
        within("the response", read_byte(&mut client))
            .await
            .unwrap(),
        Some(42)
    );
    assert_eq!(
        within("the close", read_byte(&mut client)).await.unwrap(),
        None
    );
    let summary = within("the shutdown", shutdown).await.unwrap();
    assert_eq!((summary.finished, summary.forced, summary.stuck), (1, 0, 0));
    assert!(summary.is_graceful());
    assert!(
        t0.elapsed() < STOP,
        "finished before the stop deadline, without waiting it out"
    );
    let counters = drain.counters();
    assert_eq!(
        (
            counters.active,
            counters.accepted,
            counters.finished,
            counters.forced
        ),
        (0, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn never_finishing_connection_is_force_closed_at_stop_timeout() {
    let drain = Drain::new();
    let (mut listener, connector) = duplex_listener(&drain);
    let started = Arc::new(Notify::new());
    let (task_tx, task_rx) = oneshot::channel();
    let server = tokio::spawn({
        let started = Arc::clone(&started);
        async move {
            let (conn, _) = listener
                .accept()
                .await
                .expect("one connection")
                .expect("accept");
            let task = conn.spawn(move |mut conn| async move {
                read_byte(&mut conn)
                    .await
                    .expect("read")
                    .expect("a request");
                started.notify_one();
                // Never answers, and is not even reading: only the abort can close it.
                std::future::pending::<()>().await;
                drop(conn);
            });
            task_tx.send(task).expect("test alive");
        }
    });

    let mut client = connector.connect();
    write_byte(&mut client, 1).await.unwrap();
    within("the request to start", started.notified()).await;
    within("the accept task", server).await.unwrap();

    let t0 = Instant::now();
    let summary = within("the shutdown", drain.shutdown(TIMEOUTS)).await;
    let elapsed = t0.elapsed();
    assert_eq!((summary.finished, summary.forced, summary.stuck), (0, 1, 0));
    assert!(!summary.is_graceful());
    assert!(
        elapsed >= STOP,
        "force-closed at the stop deadline, not before: {elapsed:?}"
    );
    assert!(
        elapsed < STOP + KILL,
        "and ended without waiting out the kill timeout"
    );

    // The peer sees the close, and the task was aborted, not finished.
    assert_eq!(
        within("the close", read_byte(&mut client)).await.unwrap(),
        None
    );
    let task = within("the task handle", task_rx).await.unwrap();
    assert!(within("the task", task).await.unwrap_err().is_cancelled());
    let counters = drain.counters();
    assert_eq!(
        (counters.active, counters.finished, counters.forced),
        (0, 0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn force_close_wakes_a_connection_read_outside_an_attached_task() {
    let drain = Drain::new();
    let (client_end, server_end) = tokio::io::duplex(1024);
    let mut client = client_end;
    let mut conn = drain.track(server_end);
    // A task spawned the ordinary way, parked in a read that will never get data.
    let reader = tokio::spawn(async move {
        let read = read_byte(&mut conn).await;
        drop(conn);
        read
    });
    tokio::task::yield_now().await;

    let summary = within("the shutdown", drain.shutdown(TIMEOUTS)).await;
    assert_eq!((summary.finished, summary.forced, summary.stuck), (0, 1, 0));
    let read = within("the reader", reader).await.unwrap();
    assert_eq!(
        read.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionAborted
    );
    assert_eq!(
        within("the close", read_byte(&mut client)).await.unwrap(),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn connection_held_outside_the_aborted_task_is_reported_stuck() {
    let drain = Drain::new();
    let (mut client, server_end) = tokio::io::duplex(1024);
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    let (holder_tx, holder_rx) = oneshot::channel();
    let task = drain.track(server_end).spawn(move |conn| async move {
        // The connection leaves the task for a thread: aborting the task cannot reach it.
        let holder = std::thread::spawn(move || {
            let _conn = conn;
            let _ = release_rx.recv_timeout(WAIT);
        });
        holder_tx.send(holder).expect("test alive");
        std::future::pending::<()>().await;
    });
    let holder = within("the handover", holder_rx).await.unwrap();

    let t0 = Instant::now();
    let summary = within("the shutdown", drain.shutdown(TIMEOUTS)).await;
    assert_eq!((summary.finished, summary.forced, summary.stuck), (0, 0, 1));
    assert!(t0.elapsed() >= STOP + KILL, "waited out both deadlines");
    assert!(within("the task", task).await.unwrap_err().is_cancelled());
    assert_eq!(drain.counters().active, 1, "still counted while it is open");

    // Once it lets go, it is counted as force-closed, and the peer sees the close.
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let counters = drain.counters();
    assert_eq!(
        (counters.active, counters.finished, counters.forced),
        (0, 0, 1)
    );
    assert_eq!(
        within("the close", read_byte(&mut client)).await.unwrap(),
        None
    );
}

/// Real time and two workers: one of them is blocked by the connection's task, which ignores
/// the abort because it never yields. The outcome does not depend on how long anything takes:
/// the task cannot end before the test releases it, after the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_blocked_without_yielding_is_reported_stuck() {
    let drain = Drain::new();
    let (_client, server_end) = tokio::io::duplex(1024);
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel();
    let task = drain.track(server_end).spawn(move |conn| async move {
        started_tx.send(()).expect("test alive");
        // Blocking inside an async task (the bug this guards against): the worker is stuck here
        // and tokio cannot drop the aborted future until it returns.
        let _ = release_rx.recv_timeout(WAIT);
        tokio::task::yield_now().await;
        drop(conn);
    });
    within("the task to block", started_rx).await.unwrap();

    let short = StopTimeouts {
        stop: Some(Duration::from_millis(50)),
        kill: Some(Duration::from_millis(50)),
    };
    let summary = within("the shutdown", drain.shutdown(short)).await;
    assert_eq!((summary.finished, summary.forced, summary.stuck), (0, 0, 1));

    release_tx.send(()).unwrap();
    assert!(within("the task", task).await.unwrap_err().is_cancelled());
    let counters = drain.counters();
    assert_eq!(
        (counters.active, counters.finished, counters.forced),
        (0, 0, 1)
    );
}

/// A real socket: the force-close must reach the peer as a close.
#[tokio::test]
async fn force_close_closes_the_tcp_peer() {
    let drain = Drain::new();
    let mut listener =
        drain.track_listener(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.get_ref().unwrap().local_addr().unwrap();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (conn, _) = within("accept", listener.accept()).await.unwrap().unwrap();
    let started = Arc::new(Notify::new());
    let task = conn.spawn({
        let started = Arc::clone(&started);
        move |mut conn| async move {
            read_byte(&mut conn)
                .await
                .expect("read")
                .expect("a request");
            started.notify_one();
            std::future::pending::<()>().await;
            drop(conn);
        }
    });
    client.write_all(b"x").await.unwrap();
    within("the request to start", started.notified()).await;

    let now = StopTimeouts {
        stop: Some(Duration::ZERO),
        kill: Some(WAIT),
    };
    let summary = within("the shutdown", drain.shutdown(now)).await;
    assert_eq!((summary.finished, summary.forced, summary.stuck), (0, 1, 0));
    match within("the close", read_byte(&mut client)).await {
        Ok(None) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the peer to see a close, got {other:?}"),
    }
    assert!(within("the task", task).await.unwrap_err().is_cancelled());
}
