//! The load: a fixed arrival rate over [`CONNS`] connections with [`STREAMS`] requests in
//! flight on each, on a thread of its own (a current-thread tokio runtime: see
//! `retry::classify` for why one thread), and its figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use testkit::http::Target;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::pool::{self, Connector, Lost, Retries, Slot};
use crate::harness::interrupt;
use crate::harness::outcomes::{Latency, Outcomes};

/// Connections kept open, and requests in flight on each (well under any server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`, so no stream waits to open).
pub(crate) const CONNS: usize = 4;
pub(crate) const STREAMS: usize = 4;
/// Requests per second at most: a small share of one core, so that oha keeps the machine.
pub(crate) const RATE: u64 = 2_000;
/// A request not answered within this, retries included, is lost: gracedemo answers in
/// microseconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Error messages kept, per list.
const KEEP: usize = 10;

/// What to load.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// h2c with prior knowledge, or TLS (h2 through ALPN) with a configuration from
    /// `testkit::tls::client_config`, which never resumes a session.
    pub(crate) target: Target,
    pub(crate) rate: u64,
    pub(crate) requests: u64,
}

/// The figures of one run (and of one worker, added up at the end).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct H2Stats {
    /// `h2c` or `tls h2`.
    pub(crate) kind: &'static str,
    pub(crate) rate: u64,
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    /// Requests answered after at least one retry.
    #[serde(rename = "retried_requests")]
    pub(crate) retried: u64,
    /// Attempts hyper never sent (handed back, or canceled before sending), each sent again.
    pub(crate) retried_unsent: u64,
    /// Attempts above the last stream id of a GOAWAY, each sent again.
    #[serde(rename = "retried_refused_goaway")]
    pub(crate) retried_goaway: u64,
    /// Attempts reset with REFUSED_STREAM, each sent again.
    pub(crate) retried_refused_stream: u64,
    /// Why the first few retried requests' first attempts failed.
    pub(crate) retry_examples: Vec<String>,
    /// Lost requests by outcome (the names of [`Outcomes::bucket`]).
    #[serde(rename = "lost_by_outcome")]
    pub(crate) lost: BTreeMap<&'static str, u64>,
    /// Why requests were lost (the first few).
    pub(crate) errors: Vec<String>,
    #[serde(rename = "connections_opened")]
    pub(crate) connections: u64,
    /// Connections that ended with an error rather than a clean close (not a verdict: the
    /// requests on them count by their own outcome).
    pub(crate) connection_errors: u64,
    pub(crate) connection_error_messages: Vec<String>,
    /// Of the answered requests, from when each was due, retries included.
    #[serde(rename = "latency_ms")]
    pub(crate) latency: Latency,
    /// The times `latency` is made of, until the end of the run.
    #[serde(skip)]
    latencies: Vec<Duration>,
}

impl H2Stats {
    pub(crate) fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// Requests that have an outcome (all of them, unless the run was stopped early).
    pub(crate) fn done(&self) -> u64 {
        self.ok + self.lost_total()
    }

    /// Every request by outcome, as the scenario counts the in-tree clients'.
    pub(crate) fn outcomes(&self) -> Outcomes {
        let mut o = Outcomes {
            ok: self.ok,
            ..Outcomes::default()
        };
        for (&kind, &n) in &self.lost {
            *o.bucket(kind) += n;
        }
        o
    }

    /// One line for the report.
    pub(crate) fn describe(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        format!(
            "in-tree {} client ({CONNS} connections x {STREAMS} streams, {} req/s; checks the \
             connection before each request, retries only what RFC 9113 says the server did \
             not process): {} requests, {} ok, {} lost; {} answered after a retry ({} attempts \
             never sent, {} above a GOAWAY's last stream id, {} REFUSED_STREAM); {} \
             connections opened; latency p50 {} / p99 {} / max {} ms",
            self.kind,
            self.rate,
            self.requests,
            self.ok,
            self.lost_total(),
            self.retried,
            self.retried_unsent,
            self.retried_goaway,
            self.retried_refused_stream,
            self.connections,
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max),
        )
    }

    /// Counts one request: its outcome (at `at` into the run) and its retries.
    fn count(&mut self, at: Duration, outcome: Result<(), Lost>, retries: Retries) {
        let at = at.as_secs_f64();
        match outcome {
            Ok(()) => {
                self.ok += 1;
                if let Some(first) = retries.first {
                    self.retried += 1;
                    keep(
                        &mut self.retry_examples,
                        vec![format!("at {at:.3} s: {first}")],
                    );
                }
            }
            Err(lost) => {
                *self.lost.entry(lost.bucket).or_default() += 1;
                let why = format!("at {at:.3} s: {}: {}", lost.bucket, lost.why);
                keep(&mut self.errors, vec![why]);
            }
        }
        self.retried_unsent += retries.unsent;
        self.retried_goaway += retries.goaway;
        self.retried_refused_stream += retries.refused_stream;
    }

    /// Adds a worker's counts.
    fn add(&mut self, t: H2Stats) {
        self.ok += t.ok;
        self.retried += t.retried;
        self.retried_unsent += t.retried_unsent;
        self.retried_goaway += t.retried_goaway;
        self.retried_refused_stream += t.retried_refused_stream;
        keep(&mut self.retry_examples, t.retry_examples);
        for (k, n) in t.lost {
            *self.lost.entry(k).or_default() += n;
        }
        keep(&mut self.errors, t.errors);
        self.latencies.extend(t.latencies);
    }
}

fn keep(list: &mut Vec<String>, more: Vec<String>) {
    let room = KEEP.saturating_sub(list.len());
    list.extend(more.into_iter().take(room));
}

/// The client running on its own thread.
#[derive(Debug)]
pub(crate) struct H2Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<H2Stats>>>,
}

impl H2Load {
    pub(crate) fn start(plan: Plan) -> Result<H2Load> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime for the HTTP/2 client")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("h2load".into())
            .spawn(move || rt.block_on(run(plan, flag)))
            .context("starting the HTTP/2 client's thread")?;
        Ok(H2Load {
            stop,
            thread: Some(thread),
        })
    }

    /// Waits until every planned request has its outcome (each within its timeout), then
    /// returns the figures.
    pub(crate) fn finish(mut self) -> Result<H2Stats> {
        let thread = self
            .thread
            .take()
            .context("the HTTP/2 client was already finished")?;
        let stats = thread
            .join()
            .map_err(|_| anyhow!("the HTTP/2 client's thread panicked"))??;
        interrupt::check()?;
        Ok(stats)
    }
}

impl Drop for H2Load {
    fn drop(&mut self) {
        // Abandoned on an error: stop early, and still never leave the thread behind.
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
    }
}

async fn run(plan: Plan, stop: Arc<AtomicBool>) -> Result<H2Stats> {
    let tls = plan.target.scheme() == "https";
    let connector = Arc::new(Connector::new(plan.target)?);
    let slots: Vec<Arc<Slot>> = (0..CONNS).map(|_| Arc::new(Slot::default())).collect();
    let workers = (CONNS * STREAMS) as u64;
    let rate = plan.rate.max(1);
    let planned = Duration::from_secs_f64(plan.requests as f64 / rate as f64);
    let start = Instant::now();
    // Past this no request is started: the planned time three times over, as for oha.
    let deadline = start + planned * 3 + Duration::from_secs(30);
    let mut set = JoinSet::new();
    for w in 0..workers {
        let slot = Arc::clone(&slots[w as usize % CONNS]);
        let (connector, stop) = (Arc::clone(&connector), Arc::clone(&stop));
        let requests = plan.requests;
        set.spawn(async move {
            let mut tally = H2Stats::default();
            // Request i is due at i / rate; this worker takes every `workers`-th one.
            for i in (w..requests).step_by(workers as usize) {
                if stop.load(Ordering::SeqCst) || interrupt::interrupted() {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
                let mut retries = Retries::default();
                let outcome = if Instant::now() >= deadline {
                    Err(Lost::new("other", "not started: the run overran"))
                } else {
                    let request = pool::request(&slot, &connector, &mut retries);
                    tokio::time::timeout(REQUEST_TIMEOUT, request)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Lost::new(
                                "timeout",
                                format!("no answer within {REQUEST_TIMEOUT:?}"),
                            ))
                        })
                };
                if outcome.is_ok() {
                    tally.latencies.push(due.elapsed());
                }
                tally.count(due - start, outcome, retries);
            }
            tally
        });
    }
    let mut stats = H2Stats {
        kind: if tls { "tls h2" } else { "h2c" },
        rate: plan.rate,
        requests: plan.requests,
        ..H2Stats::default()
    };
    let mut failed = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(t) => stats.add(t),
            Err(e) => failed = Some(e),
        }
    }
    for slot in &slots {
        let closed = slot.close().await;
        stats.connections += closed.opened;
        stats.connection_errors += closed.errors;
        keep(&mut stats.connection_error_messages, closed.messages);
    }
    if let Some(e) = failed {
        return Err(anyhow!("an HTTP/2 client worker failed: {e}"));
    }
    stats.latency = percentiles(std::mem::take(&mut stats.latencies));
    Ok(stats)
}

fn percentiles(mut v: Vec<Duration>) -> Latency {
    if v.is_empty() {
        return Latency::default();
    }
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q) as usize).min(v.len() - 1);
        Some(v[i].as_secs_f64() * 1000.0)
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_request_once() {
        let mut t = H2Stats::default();
        let retried = Retries {
            unsent: 1,
            first: Some("Unsent: operation was canceled".into()),
            ..Retries::default()
        };
        t.count(Duration::from_secs(1), Ok(()), retried);
        for outcome in [
            Ok(()),
            Err(Lost::new("reset", "RST")),
            Err(Lost::new("timeout", "slow")),
        ] {
            t.count(Duration::ZERO, outcome, Retries::default());
        }
        let mut s = H2Stats {
            requests: 4,
            ..H2Stats::default()
        };
        s.add(t);
        let o = s.outcomes();
        assert_eq!((o.total(), o.ok, o.reset, o.timeout), (4, 2, 1, 1));
        assert_eq!((s.done(), s.retried_unsent), (4, 1));
        assert_eq!(
            s.retry_examples,
            ["at 1.000 s: Unsent: operation was canceled"]
        );
        assert!(s.errors[0].contains("reset: RST"), "{:?}", s.errors);
    }

    #[test]
    fn percentiles_of_answered_requests() {
        let l = percentiles((1..=100).map(Duration::from_millis).collect());
        assert_eq!(
            (l.p50, l.p99, l.max),
            (Some(51.0), Some(100.0), Some(100.0))
        );
        assert_eq!(percentiles(Vec::new()), Latency::default());
    }
}
