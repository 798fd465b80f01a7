//! Driving the async clients from a synchronous test: a runtime of the client's own, so that a
//! test can block on process helpers and log lines while requests run in the background.
//!
//! A test-only convenience: every operation is bounded by [`TIMEOUT`], and going past it panics
//! with what was running.

use std::future::Future;

use crate::http::{BoxError, Reply, Target, get_once};
use crate::metrics;
use crate::wait::{TIMEOUT, wait_until};

/// A runtime for the clients (two worker threads).
#[derive(Debug)]
pub struct Client {
    rt: tokio::runtime::Runtime,
}

/// A request running on the [`Client`]'s runtime.
#[derive(Debug)]
pub struct Pending<T> {
    task: tokio::task::JoinHandle<T>,
    rt: tokio::runtime::Handle,
}

impl<T> Pending<T> {
    /// Its result.
    ///
    /// # Panics
    ///
    /// When it takes longer than [`TIMEOUT`], or the task panicked.
    pub fn wait(self) -> T {
        match self
            .rt
            .block_on(async { tokio::time::timeout(TIMEOUT, self.task).await })
        {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!("client task failed: {e}"),
            Err(_) => panic!("client task did not finish within {TIMEOUT:?}"),
        }
    }

    /// Whether it has finished.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Client {
    /// A client with a runtime of its own.
    ///
    /// # Panics
    ///
    /// When the runtime cannot be built.
    #[allow(
        clippy::new_without_default,
        reason = "building a runtime is not a default value"
    )]
    pub fn new() -> Client {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("the client runtime: {e}"));
        Client { rt }
    }

    /// Runs `fut` to its end.
    ///
    /// # Panics
    ///
    /// When it takes longer than [`TIMEOUT`].
    pub fn run<F: Future>(&self, fut: F) -> F::Output {
        self.rt
            .block_on(async { tokio::time::timeout(TIMEOUT, fut).await })
            .unwrap_or_else(|_| panic!("client operation did not finish within {TIMEOUT:?}"))
    }

    /// Runs `fut` in the background.
    pub fn spawn<F>(&self, fut: F) -> Pending<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Pending {
            task: self.rt.spawn(fut),
            rt: self.rt.handle().clone(),
        }
    }

    /// `GET path` on a new HTTP/1.1 connection.
    ///
    /// # Errors
    ///
    /// When the request fails.
    ///
    /// # Panics
    ///
    /// As [`Client::run`].
    pub fn get(&self, target: &Target, path: &str) -> Result<Reply, BoxError> {
        self.run(get_once(target.clone(), path.to_owned()))
    }

    /// The metric `series` (labels included, as rendered) of an admin port's `/metrics`, as a
    /// whole number; `None` when the request fails or the series is missing.
    pub fn metric(&self, admin: &Target, series: &str) -> Option<u64> {
        let reply = self.get(admin, "/metrics").ok()?;
        metrics::count(&reply.body, series)
    }

    /// Waits until the admin port's metric `series` is at least `value`.
    ///
    /// # Panics
    ///
    /// When it is not within [`TIMEOUT`], with the last value seen.
    pub fn wait_metric_at_least(&self, admin: &Target, series: &str, value: u64) {
        let mut last = None;
        let reached = wait_until(TIMEOUT, || {
            last = self.metric(admin, series);
            last.filter(|&v| v >= value)
        });
        assert!(
            reached.is_some(),
            "metric {series} did not reach {value} within {TIMEOUT:?}; last: {last:?}"
        );
    }
}
