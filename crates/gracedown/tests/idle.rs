//! Idle connections close as soon as the drain starts; busy ones are waited for.

mod util;

use std::sync::Arc;
use std::time::Duration;

use gracedown::{Drain, StopTimeouts};
use tokio::sync::Notify;
use tokio::time::Instant;
use util::{read_byte, within, write_byte};

const STOP: Duration = Duration::from_secs(30);
const TIMEOUTS: StopTimeouts = StopTimeouts {
    stop: Some(STOP),
    kill: Some(Duration::from_secs(5)),
};

#[tokio::test(start_paused = true)]
async fn idle_connections_close_at_once_while_a_busy_one_is_waited_for() {
    let drain = Drain::new();
    let ready = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());

    // Idle, served by an attached task that is not even reading: closed by aborting it.
    let (mut idle_spawned, server_end) = tokio::io::duplex(1024);
    drain.track(server_end).spawn({
        let ready = Arc::clone(&ready);
        move |conn| async move {
            conn.mark_idle();
            ready.notify_one();
            std::future::pending::<()>().await;
            drop(conn);
        }
    });
    within("the first idle connection", ready.notified()).await;

    // Idle, served by an ordinary task parked in a read: closed by ending the read.
    let (mut idle_reading, server_end) = tokio::io::duplex(1024);
    let mut conn = drain.track(server_end);
    let reader = tokio::spawn({
        let ready = Arc::clone(&ready);
        async move {
            conn.mark_idle();
            ready.notify_one();
            let read = read_byte(&mut conn).await;
            drop(conn);
            read
        }
    });
    within("the second idle connection", ready.notified()).await;

    // Busy: a request in progress, answered only when the gate opens.
    let (mut busy, server_end) = tokio::io::duplex(1024);
    drain.track(server_end).spawn({
        let (ready, gate) = (Arc::clone(&ready), Arc::clone(&gate));
        move |mut conn| async move {
            let request = read_byte(&mut conn)
                .await
                .expect("read")
                .expect("a request");
            ready.notify_one();
            gate.notified().await;
            write_byte(&mut conn, request + 1).await.expect("write");
        }
    });
    write_byte(&mut busy, 7).await.unwrap();
    within("the busy connection", ready.notified()).await;

    let counters = drain.counters();
    assert_eq!((counters.active, counters.idle), (3, 2));

    let t0 = Instant::now();
    let shutdown = tokio::spawn({
        let drain = drain.clone();
        async move { drain.shutdown(TIMEOUTS).await }
    });
    // Both idle peers see the close while the busy request is still held at the gate.
    assert_eq!(
        within("idle close 1", read_byte(&mut idle_spawned))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        within("idle close 2", read_byte(&mut idle_reading))
            .await
            .unwrap(),
        None
    );
    let read = within("the idle reader", reader).await.unwrap();
    assert_eq!(read.unwrap(), None, "an idle close reads as EOF");
    assert!(t0.elapsed() < STOP);
    let counters = drain.counters();
    assert_eq!(
        (counters.active, counters.idle, counters.finished),
        (1, 0, 2)
    );
    assert!(!shutdown.is_finished());

    gate.notify_one();
    assert_eq!(
        within("the response", read_byte(&mut busy)).await.unwrap(),
        Some(8)
    );
    let summary = within("the shutdown", shutdown).await.unwrap();
    assert_eq!((summary.finished, summary.forced, summary.stuck), (3, 0, 0));
    assert!(t0.elapsed() < STOP);
}

#[tokio::test(start_paused = true)]
async fn connection_going_idle_during_the_drain_closes_at_once() {
    let drain = Drain::new();
    let (mut client, server_end) = tokio::io::duplex(1024);
    let mut conn = drain.track(server_end);
    let handle = conn.handle();

    drain.drain();
    assert!(!conn.is_closing(), "a busy connection is left to finish");
    assert_eq!(drain.counters().active, 1);

    handle.mark_idle();
    assert!(conn.is_closing());
    assert!(
        !handle.mark_busy(),
        "a connection the drain closed cannot turn busy again"
    );
    assert_eq!(within("the EOF", read_byte(&mut conn)).await.unwrap(), None);
    let write = within("the write", write_byte(&mut conn, 1))
        .await
        .unwrap_err();
    assert_eq!(write.kind(), std::io::ErrorKind::ConnectionAborted);
    assert_eq!(drain.counters().idle, 1);

    drop(conn);
    assert_eq!(
        within("the close", read_byte(&mut client)).await.unwrap(),
        None
    );
    let counters = drain.counters();
    assert_eq!(
        (
            counters.active,
            counters.idle,
            counters.finished,
            counters.forced
        ),
        (0, 0, 1, 0)
    );
    assert!(handle.is_ended());
    assert!(!handle.is_idle());
}

#[tokio::test(start_paused = true)]
async fn connection_busy_again_before_the_drain_is_waited_for() {
    let drain = Drain::new();
    let (_client, server_end) = tokio::io::duplex(1024);
    let conn = drain.track(server_end);
    conn.mark_idle();
    conn.mark_idle();
    assert_eq!(drain.counters().idle, 1, "marking twice counts once");
    assert!(conn.mark_busy());
    assert!(conn.mark_busy());
    assert_eq!(drain.counters().idle, 0);

    drain.drain();
    assert!(!conn.is_closing());
    let summary = within(
        "the shutdown",
        drain.shutdown(StopTimeouts {
            stop: Some(STOP),
            kill: Some(Duration::ZERO),
        }),
    )
    .await;
    // It was waited for until the stop deadline, then force-closed; nothing drops it, so it
    // is still open at the (zero) kill deadline.
    assert_eq!((summary.finished, summary.forced, summary.stuck), (0, 0, 1));
    assert!(conn.is_closing());
    drop(conn);
    let counters = drain.counters();
    assert_eq!(
        (counters.active, counters.finished, counters.forced),
        (0, 0, 1)
    );
}
