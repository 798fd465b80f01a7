//! In-tree clients, for what a load generator cannot express:
//!
//! - slow requests that span restarts, each checked against the pid that accepted its
//!   connection (oha does not read response bodies);
//! - keep-alive connections left idle across a restart and then reused, telling a clean close
//!   from a reset (oha's pool hides both behind retries or one error string);
//! - the restart probe in `server.rs` (a new connection every few ms, to time when the new pid
//!   answers and how slow a request gets inside the restart window, which oha cannot report
//!   per window);
//! - the HTTP/2 load client in `h2load.rs`, beside each of oha's HTTP/2 loads: it checks the
//!   connection before each request and retries a request caught by a draining server's
//!   GOAWAY only when RFC 9113 says the server did not process it, so that every other failure
//!   counts as lost (oha cannot express that retry: it fails all such requests alike, so it
//!   cannot tell a refused request from a lost one).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{self, Fail, HttpError};
use super::proc;
use super::report::Outcomes;

/// A slow request that completed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slow {
    pub(crate) sent: Instant,
    pub(crate) done: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct SlowStats {
    pub(crate) outcomes: Outcomes,
    pub(crate) completed: Vec<Slow>,
    /// Why requests failed (the first few).
    pub(crate) failures: Vec<String>,
    /// Connections refused after the server was told to stop (expected then).
    pub(crate) refused_after_stop: u64,
    /// `/pid` answers with `Connection: close` (the server was draining), retried.
    pub(crate) retried: u64,
}

impl SlowStats {
    fn failed(&mut self, what: String) {
        if self.failures.len() < 20 {
            self.failures.push(what);
        }
    }

    fn merge(&mut self, o: SlowStats) {
        self.outcomes.add(&o.outcomes);
        self.completed.extend(o.completed);
        for f in o.failures {
            self.failed(f);
        }
        self.refused_after_stop += o.refused_after_stop;
        self.retried += o.retried;
    }

    /// Completed requests that were in flight at one of `signals`.
    pub(crate) fn spanning(&self, signals: &[Instant]) -> usize {
        self.completed
            .iter()
            .filter(|s| signals.iter().any(|&t| s.sent < t && t < s.done))
            .count()
    }
}

/// Threads that each send, one after another, `GET /pid` then `GET /sleep/?duration=D` (D from
/// 1 to 5 s, or as given) on the same connection, and check that the slow response comes from
/// the pid that answered `/pid` on that connection: the pid that accepted it.
#[derive(Debug)]
pub(crate) struct SlowClients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<SlowStats>>,
}

impl SlowClients {
    /// `stopping`: once set, a refused connection is expected (the server was told to stop)
    /// and ends that client.
    pub(crate) fn start(
        addr: SocketAddr,
        clients: usize,
        millis: (u64, u64),
        until: Instant,
        stopping: Arc<AtomicBool>,
    ) -> SlowClients {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|n| {
                let (stop, stopping) = (Arc::clone(&stop), Arc::clone(&stopping));
                std::thread::spawn(move || slow_client(addr, n, millis, until, &stop, &stopping))
            })
            .collect();
        SlowClients { stop, threads }
    }

    /// Lets the requests in flight finish (each within its timeout), then returns the counts.
    pub(crate) fn finish(self) -> SlowStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = SlowStats::default();
        for t in self.threads {
            match t.join() {
                Ok(s) => all.merge(s),
                Err(_) => all.failed("a slow client panicked".into()),
            }
        }
        all
    }
}

fn slow_client(
    addr: SocketAddr,
    n: usize,
    (lo, hi): (u64, u64),
    until: Instant,
    stop: &AtomicBool,
    stopping: &AtomicBool,
) -> SlowStats {
    let mut stats = SlowStats::default();
    // A fixed sequence of durations, different per client, spread over lo..=hi.
    let span = hi.saturating_sub(lo) + 1;
    // Bounded: at most this many requests, and never past `until`.
    for i in 0..10_000u64 {
        if stop.load(Ordering::SeqCst) || Instant::now() >= until || proc::interrupted() {
            break;
        }
        let millis = lo + (i * 7919 + n as u64 * 3571) % span;
        let timeout = Duration::from_millis(millis) + Duration::from_secs(10);
        let stopping_before = stopping.load(Ordering::SeqCst);
        let mut conn = match http::connect(addr, Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) if e.fail == Fail::Refused && stopping.load(Ordering::SeqCst) => {
                stats.refused_after_stop += 1;
                break;
            }
            Err(e) => {
                *stats.outcomes.bucket(e.fail.name()) += 1;
                stats.failed(format!("connect: {e}"));
                continue;
            }
        };
        let accepted_by = match http::get_on(&mut conn, "/pid", false, Duration::from_secs(5)) {
            Ok(r) if r.status == 200 && r.pid().is_some() => {
                stats.outcomes.ok += 1;
                if r.close {
                    // Accepted by a draining process: it may not take another request.
                    stats.retried += 1;
                    continue;
                }
                r.pid().unwrap_or_default()
            }
            Ok(r) => {
                stats.outcomes.non2xx += 1;
                stats.failed(format!("GET /pid: {} {:?}", r.status, r.body));
                continue;
            }
            Err(e) => {
                *stats.outcomes.bucket(e.fail.name()) += 1;
                stats.failed(format!("GET /pid: {e}"));
                continue;
            }
        };
        let path = format!("/sleep/?duration={millis}ms");
        let sent = Instant::now();
        match http::get_on(&mut conn, &path, true, timeout) {
            Ok(r) if r.status == 200 => {
                let done = Instant::now();
                let pid = r.pid().unwrap_or(0);
                if pid != accepted_by {
                    stats.outcomes.other += 1;
                    stats.failed(format!(
                        "GET {path} on a connection accepted by pid {accepted_by} was answered \
                         by pid {pid}: {:?}",
                        r.body.trim()
                    ));
                } else if done - sent < Duration::from_millis(millis) {
                    stats.outcomes.other += 1;
                    stats.failed(format!(
                        "GET {path} answered after {:?}, before its duration",
                        done - sent
                    ));
                } else {
                    stats.outcomes.ok += 1;
                    stats.completed.push(Slow { sent, done });
                }
            }
            Ok(r) => {
                stats.outcomes.non2xx += 1;
                stats.failed(format!("GET {path}: {} {:?}", r.status, r.body));
            }
            Err(e) => {
                *stats.outcomes.bucket(e.fail.name()) += 1;
                let when = if stopping_before {
                    " (sent after the stop signal)"
                } else {
                    ""
                };
                stats.failed(format!("GET {path} to pid {accepted_by}{when}: {e}"));
            }
        }
    }
    stats
}

#[derive(Debug, Default)]
pub(crate) struct IdleStats {
    pub(crate) outcomes: Outcomes,
    /// Reused and answered.
    pub(crate) reused: u64,
    /// Found closed (a clean FIN) before reuse; the retry on a new connection succeeded.
    pub(crate) closed_idle: u64,
    /// Closed cleanly after the request was sent, before any response byte; the retry on a
    /// new connection succeeded. Acceptable HTTP keep-alive behaviour.
    pub(crate) closed_after_send: u64,
    /// ECONNRESET or EPIPE on a reused connection.
    pub(crate) resets: u64,
    pub(crate) failures: Vec<String>,
}

impl IdleStats {
    fn failed(&mut self, what: String) {
        if self.failures.len() < 20 {
            self.failures.push(what);
        }
    }
}

/// Opens `n` keep-alive connections, each with one request answered, left idle.
pub(crate) fn open_idle(addr: SocketAddr, n: usize, stats: &mut IdleStats) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let attempt = http::connect(addr, Duration::from_secs(5)).and_then(|mut c| {
            let r = http::get_on(&mut c, "/pid", false, Duration::from_secs(5))?;
            Ok((c, r))
        });
        match attempt {
            Ok((c, r)) if r.status == 200 && !r.close => {
                stats.outcomes.ok += 1;
                conns.push(c);
            }
            Ok((_, r)) => {
                stats.outcomes.ok += u64::from(r.status == 200);
                stats.outcomes.non2xx += u64::from(r.status != 200);
                if r.status != 200 {
                    stats.failed(format!("opening: GET /pid {} {:?}", r.status, r.body));
                }
            }
            Err(e) => {
                *stats.outcomes.bucket(e.fail.name()) += 1;
                stats.failed(format!("opening: {e}"));
            }
        }
    }
    conns
}

/// Reuses an idle connection for `GET /pid`. A clean close (before the request, or after it
/// but before any response byte) is followed by a retry on a new connection, which must
/// succeed; a reset or a lost request is a failure.
pub(crate) fn reuse(mut conn: TcpStream, addr: SocketAddr, stats: &mut IdleStats) {
    let tag = |e: &HttpError| format!("reusing an idle connection: {e}");
    match http::peer_closed(&conn) {
        Ok(true) => {
            stats.closed_idle += 1;
            retry(addr, stats);
            return;
        }
        Ok(false) => {}
        Err(e) => {
            if e.fail == Fail::Reset {
                stats.resets += 1;
            }
            *stats.outcomes.bucket(e.fail.name()) += 1;
            stats.failed(tag(&e));
            return;
        }
    }
    match http::get_on(&mut conn, "/pid", false, Duration::from_secs(5)) {
        Ok(r) if r.status == 200 => {
            stats.outcomes.ok += 1;
            stats.reused += 1;
        }
        Ok(r) => {
            stats.outcomes.non2xx += 1;
            stats.failed(format!("reused: GET /pid {} {:?}", r.status, r.body));
        }
        Err(e) if e.fail == Fail::Closed => {
            stats.closed_after_send += 1;
            retry(addr, stats);
        }
        Err(e) => {
            if e.fail == Fail::Reset {
                stats.resets += 1;
            }
            *stats.outcomes.bucket(e.fail.name()) += 1;
            stats.failed(tag(&e));
        }
    }
}

fn retry(addr: SocketAddr, stats: &mut IdleStats) {
    match http::get(addr, "/pid", Duration::from_secs(5)) {
        Ok(r) if r.status == 200 => stats.outcomes.ok += 1,
        Ok(r) => {
            stats.outcomes.non2xx += 1;
            stats.failed(format!(
                "retry after a clean close: GET /pid {} {:?}",
                r.status, r.body
            ));
        }
        Err(e) => {
            *stats.outcomes.bucket(e.fail.name()) += 1;
            stats.failed(format!("retry after a clean close: {e}"));
        }
    }
}
