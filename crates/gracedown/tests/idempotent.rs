//! Draining more than once, from anywhere, before or after handles are dropped: no hang, no
//! panic, counts still right.

mod util;

use std::time::Duration;

use gracedown::{Drain, StopTimeouts};
use util::{duplex_listener, within};

const TIMEOUTS: StopTimeouts = StopTimeouts {
    stop: Some(Duration::from_secs(10)),
    kill: Some(Duration::from_secs(5)),
};

#[tokio::test(start_paused = true)]
async fn drain_and_shutdown_twice_do_not_hang_or_panic() {
    let drain = Drain::new();
    let (mut listener, connector) = duplex_listener(&drain);
    let _client = connector.connect();
    let (conn, _) = within("accept", listener.accept()).await.unwrap().unwrap();
    let task = conn.spawn(|conn| async move {
        // Ends when the drain starts, like a protocol that closes on the signal.
        conn.drained().await;
        drop(conn);
    });

    drain.drain();
    drain.drain();
    let other = drain.clone();
    std::thread::spawn(move || other.drain()).join().unwrap();
    assert!(drain.is_draining() && !drain.is_force_closing());

    // Two concurrent shutdowns: both return, and the connection is counted once.
    let (first, second) = within("two shutdowns", async {
        tokio::join!(drain.shutdown(TIMEOUTS), drain.shutdown(TIMEOUTS))
    })
    .await;
    assert_eq!(first.stuck + second.stuck, 0);
    assert_eq!(first.finished, 1);
    assert_eq!(second.finished, 1);
    within("the task", task).await.unwrap();

    // And once more after everything ended, plus force-closes, which change nothing now.
    drain.force_close();
    drain.force_close();
    let again = within("a third shutdown", drain.shutdown(TIMEOUTS)).await;
    assert_eq!((again.finished, again.forced, again.stuck), (0, 0, 0));
    within("a drained future made after the drain", drain.drained()).await;
    assert!(
        within("accept after the drain", listener.accept())
            .await
            .is_none()
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
async fn dropped_handles_do_not_hang_or_panic() {
    let drain = Drain::new();
    let (listener, connector) = duplex_listener(&drain);
    let (_client, server_end) = tokio::io::duplex(64);
    let conn = drain.track(server_end);
    let handle = conn.handle();
    let waiting = tokio::spawn(conn.drained());

    // The listener goes first, then the drain itself: the connection keeps the state alive.
    drop(listener);
    drop(connector);
    drop(drain);
    let drain = handle.drain().clone();
    assert_eq!(drain.counters().active, 1);

    // Draining after the listener was dropped is fine, and wakes the waiting task.
    drain.drain();
    within("the drained future", waiting).await.unwrap();
    drop(conn);
    assert!(handle.is_ended());
    handle.mark_idle();
    assert_eq!(
        drain.counters().idle,
        0,
        "a handle to an ended connection changes nothing"
    );
    let summary = within("the shutdown", drain.shutdown(TIMEOUTS)).await;
    assert_eq!((summary.finished, summary.forced, summary.stuck), (0, 0, 0));
    drop(handle);
    drain.force_close();
    assert_eq!(drain.counters().finished, 1);
}

#[tokio::test(start_paused = true)]
async fn drained_future_outliving_every_handle_stays_pending() {
    let drain = Drain::new();
    let drained = drain.drained();
    drop(drain);
    // Nobody can start the drain any more: the future must not pretend it started.
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), drained)
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn panicked_and_aborted_tasks_are_counted_as_ended() {
    let drain = Drain::new();
    let (_a, server_end) = tokio::io::duplex(64);
    let panicked = drain.track(server_end).spawn(|conn| async move {
        conn.mark_idle();
        panic!("the handler panicked");
    });
    let (_b, server_end) = tokio::io::duplex(64);
    let aborted = drain.track(server_end).spawn(|conn| async move {
        std::future::pending::<()>().await;
        drop(conn);
    });
    aborted.abort();
    assert!(
        within("the panicking task", panicked)
            .await
            .unwrap_err()
            .is_panic()
    );
    assert!(
        within("the aborted task", aborted)
            .await
            .unwrap_err()
            .is_cancelled()
    );
    let counters = drain.counters();
    assert_eq!(
        (
            counters.active,
            counters.idle,
            counters.accepted,
            counters.finished
        ),
        (0, 0, 2, 2)
    );
    let summary = within("the shutdown", drain.shutdown(TIMEOUTS)).await;
    assert!(summary.is_graceful());
}

#[tokio::test(start_paused = true)]
async fn shutdown_without_deadlines_waits_for_the_last_connection() {
    let drain = Drain::new();
    let (_client, server_end) = tokio::io::duplex(64);
    let conn = drain.track(server_end);
    let forever = StopTimeouts {
        stop: None,
        kill: None,
    };
    let shutdown = tokio::spawn({
        let drain = drain.clone();
        async move { drain.shutdown(forever).await }
    });
    // Hours of (paused) time later it still waits, and nothing was forced.
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    assert!(!shutdown.is_finished());
    assert!(!conn.is_closing());
    drop(conn);
    let summary = within("the shutdown", shutdown).await.unwrap();
    assert_eq!((summary.finished, summary.forced, summary.stuck), (1, 0, 0));
}

/// Handles move between tasks and threads freely: a compile-time check.
#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Drain>();
    send_sync::<gracedown::ConnHandle>();
    send_sync::<gracedown::Tracked<tokio::net::TcpStream>>();
    send_sync::<gracedown::TrackedListener<tokio::net::TcpListener>>();
    send_sync::<gracedown::Counters>();
    send_sync::<gracedown::Summary>();
}
