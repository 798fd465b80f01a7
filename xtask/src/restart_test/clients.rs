//! In-tree HTTP/1.1 clients, for what a load generator cannot express: slow requests that span
//! restarts, each checked against the pid that accepted its connection (oha does not read
//! bodies); keep-alive connections left idle across a restart and then reused, telling a clean
//! close from a reset (oha's pool hides both behind retries or one error string). The restart
//! probe is the harness's `restart.rs`; the HTTP/2 client is `h2load/`.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::http::{self, Fail, HttpError, Response};
use crate::harness::interrupt;
use crate::harness::outcomes::Outcomes;

/// Requests by outcome, and why the first few that failed did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) outcomes: Outcomes,
    pub(crate) failures: Vec<String>,
}

impl Tally {
    /// Counts a failed request in `bucket` (see [`Outcomes::bucket`]).
    fn fail(&mut self, bucket: &str, why: String) {
        *self.outcomes.bucket(bucket) += 1;
        if self.failures.len() < 20 {
            self.failures.push(why);
        }
    }

    /// Counts the outcome of `GET path`: a 200 is returned, anything else counted as failed.
    fn answer(&mut self, path: &str, res: Result<Response, HttpError>) -> Option<Response> {
        match res {
            Ok(r) if r.status == 200 => Some(r),
            Ok(r) => {
                self.fail("non2xx", format!("GET {path}: {} {:?}", r.status, r.text()));
                None
            }
            Err(e) => {
                self.fail(e.fail.name(), format!("GET {path}: {e}"));
                None
            }
        }
    }

    fn merge(&mut self, o: Tally) {
        self.outcomes.add(&o.outcomes);
        let room = 20_usize.saturating_sub(self.failures.len());
        self.failures.extend(o.failures.into_iter().take(room));
    }
}

/// A slow request that completed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slow {
    pub(crate) sent: Instant,
    pub(crate) done: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct SlowStats {
    pub(crate) tally: Tally,
    pub(crate) completed: Vec<Slow>,
    /// `/pid` answers with `Connection: close` (the server was draining), retried.
    pub(crate) retried: u64,
}

impl SlowStats {
    fn merge(&mut self, o: SlowStats) {
        self.tally.merge(o.tally);
        self.completed.extend(o.completed);
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
                Err(_) => all.tally.fail("other", "a slow client panicked".into()),
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
    let tally = &mut stats.tally;
    // A fixed sequence of durations, different per client, spread over lo..=hi.
    let span = hi.saturating_sub(lo) + 1;
    // Bounded: at most this many requests, and never past `until`.
    for i in 0..10_000u64 {
        if stop.load(Ordering::SeqCst) || Instant::now() >= until || interrupt::interrupted() {
            break;
        }
        let millis = lo + (i * 7919 + n as u64 * 3571) % span;
        let timeout = Duration::from_millis(millis) + Duration::from_secs(10);
        let stopping_before = stopping.load(Ordering::SeqCst);
        let mut conn = match http::connect(addr, Duration::from_secs(5)) {
            Ok(c) => c,
            // Expected once the server was told to stop: this client is done.
            Err(e) if e.fail == Fail::Refused && stopping.load(Ordering::SeqCst) => break,
            Err(e) => {
                tally.fail(e.fail.name(), format!("connect: {e}"));
                continue;
            }
        };
        let res = http::get_on(&mut conn, "/pid", false, Duration::from_secs(5));
        let Some(r) = tally.answer("/pid", res) else {
            continue;
        };
        let Some(accepted_by) = http::pid(&r) else {
            tally.fail("non2xx", format!("GET /pid: {} {:?}", r.status, r.text()));
            continue;
        };
        tally.outcomes.ok += 1;
        if r.closes() {
            // Accepted by a draining process: it may not take another request.
            stats.retried += 1;
            continue;
        }
        let path = format!("/sleep/?duration={millis}ms");
        let sent = Instant::now();
        let r = match http::get_on(&mut conn, &path, true, timeout) {
            Err(e) => {
                let when = if stopping_before {
                    " (sent after the stop signal)"
                } else {
                    ""
                };
                let why = format!("GET {path} to pid {accepted_by}{when}: {e}");
                tally.fail(e.fail.name(), why);
                continue;
            }
            res => match tally.answer(&path, res) {
                Some(r) => r,
                None => continue,
            },
        };
        let done = Instant::now();
        let pid = http::pid(&r).unwrap_or(0);
        if pid != accepted_by {
            tally.fail(
                "other",
                format!(
                    "GET {path} on a connection accepted by pid {accepted_by} was answered by \
                     pid {pid}: {:?}",
                    r.text().trim()
                ),
            );
        } else if done - sent < Duration::from_millis(millis) {
            let early = format!(
                "GET {path} answered after {:?}, before its duration",
                done - sent
            );
            tally.fail("other", early);
        } else {
            tally.outcomes.ok += 1;
            stats.completed.push(Slow { sent, done });
        }
    }
    stats
}

#[derive(Debug, Default)]
pub(crate) struct IdleStats {
    pub(crate) tally: Tally,
    /// Reused and answered.
    pub(crate) reused: u64,
    /// Found closed (a clean FIN) before reuse; the retry on a new connection succeeded.
    pub(crate) closed_idle: u64,
    /// Closed cleanly after the request was sent, before any response byte; the retry on a
    /// new connection succeeded. Acceptable HTTP keep-alive behaviour.
    pub(crate) closed_after_send: u64,
    /// ECONNRESET or EPIPE on a reused connection.
    pub(crate) resets: u64,
}

/// Opens `n` keep-alive connections, each with one request answered, left idle.
pub(crate) fn open_idle(addr: SocketAddr, n: usize, stats: &mut IdleStats) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let attempt = http::connect(addr, Duration::from_secs(5)).and_then(|mut c| {
            let r = http::get_on(&mut c, "/pid", false, Duration::from_secs(5))?;
            Ok((c, r))
        });
        let (conn, res) = match attempt {
            Ok((c, r)) => (Some(c), Ok(r)),
            Err(e) => (None, Err(e)),
        };
        if let (Some(c), Some(r)) = (conn, stats.tally.answer("/pid (opening)", res)) {
            stats.tally.outcomes.ok += 1;
            if !r.closes() {
                conns.push(c);
            }
        }
    }
    conns
}

/// Reuses an idle connection for `GET /pid`. A clean close (before the request, or after it
/// but before any response byte) is followed by a retry on a new connection, which must
/// succeed; a reset or a lost request is a failure.
pub(crate) fn reuse(mut conn: TcpStream, addr: SocketAddr, stats: &mut IdleStats) {
    let res = http::peer_closed(&conn).and_then(|closed| {
        if closed {
            stats.closed_idle += 1;
            return Ok(None);
        }
        match http::get_on(&mut conn, "/pid", false, Duration::from_secs(5)) {
            Err(e) if e.fail == Fail::Closed => {
                stats.closed_after_send += 1;
                Ok(None)
            }
            res => res.map(Some),
        }
    });
    let res = match res {
        Ok(None) => {
            // Closed cleanly: the retry on a new connection must succeed.
            let retried = http::get(addr, "/pid", Duration::from_secs(5));
            if stats
                .tally
                .answer("/pid (retry after a clean close)", retried)
                .is_some()
            {
                stats.tally.outcomes.ok += 1;
            }
            return;
        }
        Ok(Some(r)) => Ok(r),
        Err(e) => {
            stats.resets += u64::from(e.fail == Fail::Reset);
            Err(e)
        }
    };
    if stats
        .tally
        .answer("/pid (reusing an idle connection)", res)
        .is_some()
    {
        stats.tally.outcomes.ok += 1;
        stats.reused += 1;
    }
}
