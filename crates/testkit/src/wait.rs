//! Bounded waiting: polling a condition, or awaiting a future, never for longer than a limit.
//!
//! Every wait in the workspace's tests has a limit, and it is [`TIMEOUT`] unless a test says
//! otherwise. Polling is for conditions nothing can notify (a file appearing, another process
//! answering); within one process the tests use gates and channels instead.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

/// The bound of every wait in the tests: generous, so that a loaded machine does not fail them,
/// and finite, so that a broken server does not hang them. Tests that measure time assert much
/// tighter bounds themselves.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between two checks of a polled condition.
pub const POLL: Duration = Duration::from_millis(10);

/// Checks `check` every [`POLL`] until it returns `Some`, for at most `limit`; `None` if it never
/// did. Blocks the thread, for synchronous tests and programs (see [`wait_until_async`] on a
/// runtime).
pub fn wait_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(POLL.min(left));
    }
}

/// [`wait_until`] on a tokio runtime: between checks it sleeps on the runtime's clock, so the
/// runtime's other tasks (a server under test, say) go on running, and a paused clock advances.
pub async fn wait_until_async<T>(
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        tokio::time::sleep(POLL.min(left)).await;
    }
}

/// Awaits `fut` for at most `limit` on the runtime's clock.
///
/// Under a paused clock a deadlock turns into this limit passing at once (the clock jumps to
/// it), so a generous limit costs nothing there.
///
/// # Panics
///
/// When `fut` has not finished within `limit`, with a message naming `what`: a test-only
/// convenience.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Awaits an I/O future for at most `limit`; running out of time is an [`io::ErrorKind::TimedOut`]
/// error that names `what`. The bound under every operation of the kit's clients.
pub(crate) async fn io_within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: nothing within {limit:?}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_the_first_value_and_gives_up_at_the_limit() {
        let mut calls = 0;
        let found = wait_until(TIMEOUT, || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(found, Some(3));

        let started = Instant::now();
        assert_eq!(wait_until(Duration::from_millis(30), || None::<()>), None);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_async_wait_lets_the_clock_run() {
        let start = tokio::time::Instant::now();
        let found = wait_until_async(TIMEOUT, || {
            (start.elapsed() >= Duration::from_secs(1)).then_some(())
        })
        .await;
        assert_eq!(found, Some(()));
        assert_eq!(
            wait_until_async(Duration::from_secs(3), || None::<()>).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn io_within_turns_the_limit_into_timed_out() {
        let never = std::future::pending::<io::Result<()>>();
        let err = io_within(TIMEOUT, "a reply", never).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("a reply"), "{err}");
        assert_eq!(within(TIMEOUT, "a value", async { 7 }).await, 7);
    }
}
