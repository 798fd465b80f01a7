//! The scenarios and their verdicts. Every scenario also gets the checks of
//! [`verdict::judge`](super::verdict::judge): at most two live generations, no descriptor or
//! memory growth across restarts, no zombie, every generation exiting 0, the pid file naming
//! the new pid, every probe answered.

mod broken;
mod idle;
mod slow;
mod under_load;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::builder::PossibleValue;

use super::Env;
use super::h2load::{self, H2Load, H2Stats};
use super::report::ScenarioResult;
use crate::harness::demo::{Config, Demo, Launch};
use crate::harness::load::{self, Kind, Load, Proto};

/// Load before the first restart, so every connection is open and busy when it comes.
pub(super) const WARMUP: Duration = Duration::from_millis(500);
/// Load after the last restart's interval.
pub(super) const TAIL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    KeepAlive,
    Close,
    H2,
    Tls,
    Slow,
    IdleReuse,
    BrokenBinary,
    DoubleSignal,
    SocketActivation,
    Sigterm,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 10] = [
        Scenario::KeepAlive,
        Scenario::Close,
        Scenario::H2,
        Scenario::Tls,
        Scenario::Slow,
        Scenario::IdleReuse,
        Scenario::BrokenBinary,
        Scenario::DoubleSignal,
        Scenario::SocketActivation,
        Scenario::Sigterm,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::KeepAlive => "keepalive",
            Scenario::Close => "close",
            Scenario::H2 => "h2",
            Scenario::Tls => "tls",
            Scenario::Slow => "slow",
            Scenario::IdleReuse => "idle-reuse",
            Scenario::BrokenBinary => "broken-binary",
            Scenario::DoubleSignal => "double-signal",
            Scenario::SocketActivation => "socket-activation",
            Scenario::Sigterm => "sigterm",
        }
    }

    /// What it does and when it passes (`--list`).
    pub(crate) fn verdict(self) -> &'static str {
        match self {
            Scenario::KeepAlive => {
                "HTTP/1.1 keep-alive load, N restarts at a fixed interval: every request succeeds"
            }
            Scenario::Close => {
                "HTTP/1.1, a new connection per request, N restarts: every request succeeds"
            }
            Scenario::H2 => "h2c (prior knowledge) load, N restarts: every request succeeds",
            Scenario::Tls => {
                "TLS load, h2 and HTTP/1.1 side by side, N restarts: every request succeeds"
            }
            Scenario::Slow => {
                "1-5 s requests spanning restarts (and keep-alive load): each answered by the pid \
                 that accepted its connection, none lost, at least one spanned a restart"
            }
            Scenario::IdleReuse => {
                "keep-alive connections idle across a restart, then reused: no reset, no lost \
                 request (a clean close before any response byte, then a successful retry, is fine)"
            }
            Scenario::BrokenBinary => {
                "the binary path swapped to one that exits at once, then one never ready: the old \
                 pid serves throughout with zero errors and no new generation; then a good binary \
                 restarts cleanly"
            }
            Scenario::DoubleSignal => {
                "bursts of two or three SIGUSR2 under load: exactly one new generation each time, \
                 generation number +1, every request succeeds"
            }
            Scenario::SocketActivation => {
                "started by systemd-socket-activate (named fds), N restarts under load: sockets \
                 adopted, every request succeeds"
            }
            Scenario::Sigterm => {
                "load and slow requests, then SIGTERM: requests in flight complete, the process \
                 exits within the stop timeout, nothing left running"
            }
        }
    }
}

/// Scenarios by name on the command line, each with its verdict in `--help`.
impl clap::ValueEnum for Scenario {
    fn value_variants<'a>() -> &'a [Self] {
        &Scenario::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.verdict()))
    }
}

pub(crate) fn run(env: &Env, s: Scenario) -> Result<ScenarioResult> {
    let ka = Kind::KEEPALIVE;
    let one = |_: usize| 1;
    match s {
        Scenario::KeepAlive => under_load::run(env, s, &[ka], Config::default(), one),
        Scenario::Close => {
            under_load::run(env, s, &[kind(Proto::Close, false)], Config::default(), one)
        }
        Scenario::H2 => under_load::run(env, s, &[kind(Proto::H2, false)], Config::default(), one),
        Scenario::Tls => {
            let config = Config {
                tls: true,
                ..Config::default()
            };
            let kinds = [kind(Proto::KeepAlive, true), kind(Proto::H2, true)];
            under_load::run(env, s, &kinds, config, one)
        }
        Scenario::DoubleSignal => under_load::run(env, s, &[ka], Config::default(), |i| {
            if i % 2 == 0 { 2 } else { 3 }
        }),
        Scenario::SocketActivation => {
            let config = Config {
                launch: Launch::SocketActivation,
                ..Config::default()
            };
            under_load::run(env, s, &[ka], config, one)
        }
        Scenario::Slow => slow::slow(env),
        Scenario::IdleReuse => idle::run(env),
        Scenario::BrokenBinary => broken::run(env),
        Scenario::Sigterm => slow::sigterm(env),
    }
}

fn kind(proto: Proto, tls: bool) -> Kind {
    Kind { proto, tls }
}

/// The loads of a scenario: one oha per kind and, beside each HTTP/2 one, the in-tree HTTP/2
/// client (`h2load`), which retries what the protocol says was not processed and so shows
/// whether a request was lost where oha can only fail it.
#[derive(Debug)]
pub(super) struct Loads {
    oha: Vec<load::Running>,
    h2: Vec<H2Load>,
}

/// Starts one oha per kind, for `planned` at each kind's rate divided among the kinds, and the
/// in-tree HTTP/2 client beside each HTTP/2 kind (at [`h2load::RATE`], or the kind's rate if
/// lower).
pub(super) fn start_loads(
    env: &Env,
    demo: &Demo,
    result: &mut ScenarioResult,
    kinds: &[Kind],
    planned: Duration,
) -> Result<Loads> {
    let mut running = Vec::new();
    let share = kinds.len() as u64;
    let mut plans = Vec::new();
    let mut h2_plans = Vec::new();
    for &k in kinds {
        let (rate, capacity) = env.rate(k, demo)?;
        let rate = (rate / share).max(50);
        let requests = (rate as f64 * planned.as_secs_f64()) as u64;
        result.note(match capacity {
            Some(c) => format!(
                "{}: {rate} req/s for {:.1} s ({requests} requests; an unthrottled burst did {c:.0} req/s)",
                k.name(),
                planned.as_secs_f64()
            ),
            None => format!("{}: {rate} req/s for {:.1} s ({requests} requests)", k.name(), planned.as_secs_f64()),
        });
        plans.push(Load {
            kind: k,
            url: demo.url(k)?,
            rate: Some(rate),
            requests,
            ca: k.tls.then(|| env.ca.clone()),
        });
        if k.proto == Proto::H2 {
            let port = if k.tls {
                demo.ports
                    .https
                    .context("TLS load on a server without TLS")?
            } else {
                demo.ports.http[0]
            };
            let rate = rate.min(h2load::RATE);
            h2_plans.push(h2load::Plan {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                tls: k.tls.then(|| h2load::tls_config(&env.ca)).transpose()?,
                rate,
                requests: (rate as f64 * planned.as_secs_f64()) as u64,
            });
        }
    }
    // Calibration first (above), then every load at once.
    for (i, load) in plans.iter().enumerate() {
        let base = format!("{}-oha-{i}", result.name);
        let out = env.work().join(format!("{base}.json"));
        let log = env.work().join(format!("{base}.log"));
        running.push(load::start(&env.oha, load, &out, &log)?);
    }
    let mut h2 = Vec::new();
    for plan in h2_plans {
        h2.push(H2Load::start(plan)?);
    }
    Ok(Loads { oha: running, h2 })
}

/// Waits for the loads and adds them to the result. Any request not answered 2xx fails the
/// scenario, except:
///
/// - refusals when `refused_ok` (oha goes on after a final stop closed the ports);
/// - HTTP/2 requests caught by a GOAWAY, at most one per oha worker per restart. When the old
///   process drains it sends GOAWAY (first with the highest stream id, then, a round trip
///   later, with the last stream it took), finishes those streams and closes the connection.
///   oha's HTTP/2 workers do not look at the connection before each request (its HTTP/1 path
///   does), so each worker's first request after the GOAWAY fails in one of two ways and the
///   worker reconnects: hyper drops it unsent because the connection is closing ("operation
///   was canceled": "a pending item was dropped before ever being processed"), or the server's
///   final GOAWAY refuses its stream (hyper's "http2 error", whose cause oha does not print).
///   Either way the server did not process it; RFC 9113 (6.8) makes such requests safe to
///   retry, and real clients (hyper-util's pooled client, browsers) do. Measured: exactly one
///   per worker per restart. More than that bound is a failure. The limit of this excuse: a
///   stream the server processed and then reset would also read "http2 error", and would be
///   hidden if it stayed within the bound. That is what the in-tree HTTP/2 client run beside
///   oha closes: it retries only what RFC 9113 says the server did not process, and every
///   request it loses fails the scenario, with no excuse.
pub(super) fn finish_loads(
    result: &mut ScenarioResult,
    loads: Loads,
    refused_ok: bool,
    restarts: usize,
) -> Result<()> {
    let Loads { oha, h2 } = loads;
    for client in h2 {
        let stats = client.finish()?;
        record_h2_client(result, stats);
    }
    for r in oha {
        let l = r.finish()?;
        let kind = l.kind.map_or("load", Kind::name);
        let mut failed = l.outcomes.failed();
        if refused_ok && l.outcomes.refused > 0 {
            failed -= l.outcomes.refused;
            result.excused += l.outcomes.refused;
            result.note(format!(
                "{kind}: {} requests refused after SIGTERM closed the ports (expected)",
                l.outcomes.refused
            ));
        }
        if let Some(k) = l.kind.filter(|k| k.proto == Proto::H2) {
            let (conns, streams) = k.conns();
            let bound = u64::from(conns * streams) * restarts as u64;
            let caught = l.outcomes.goaway;
            if caught > bound {
                result.fail(format!(
                    "{kind}: {caught} requests failed on connections told GOAWAY, more than one \
                     per oha worker per restart ({bound})"
                ));
            } else if caught > 0 {
                failed -= caught;
                result.excused += caught;
                result.note(format!(
                    "{kind}: {caught} requests caught by a GOAWAY (canceled unsent, or refused \
                     by the final GOAWAY) and not retried by oha; at most {} per restart \
                     allowed, one per oha worker (see finish_loads){}",
                    conns * streams,
                    in_tree_h2(result, k.tls)
                ));
            }
        }
        if failed > 0 {
            let errors: Vec<String> = l
                .errors
                .iter()
                .map(|(m, n)| format!("{n} x {m:?}"))
                .collect();
            result.fail(format!(
                "{kind}: {failed} of {} requests lost ({}){}",
                l.requested,
                l.outcomes.describe(),
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(": {}", errors.join(", "))
                }
            ));
        }
        if l.unaccounted() > 0 {
            result.fail(format!(
                "{kind}: oha accounted for {} of {} requests",
                l.outcomes.total(),
                l.requested
            ));
        }
        result.loads.push(l);
    }
    Ok(())
}

/// Adds the in-tree HTTP/2 client's requests to the scenario's: every one must be answered,
/// retries the protocol allows included.
fn record_h2_client(result: &mut ScenarioResult, stats: H2Stats) {
    result.clients.add(&stats.outcomes());
    result.note(stats.describe());
    let lost = stats.lost_total();
    if lost > 0 {
        result.fail(format!(
            "in-tree {} client: {lost} of {} requests lost ({}): {}",
            stats.kind,
            stats.requests,
            stats.outcomes().describe(),
            stats.errors.join("; ")
        ));
    }
    let answered = stats.done();
    if answered < stats.requests {
        result.fail(format!(
            "in-tree {} client: {answered} of {} requests done (stopped early)",
            stats.kind, stats.requests
        ));
    }
    result.h2_clients.push(stats);
}

/// What the in-tree client beside an HTTP/2 oha load found, for oha's GOAWAY note.
fn in_tree_h2(result: &ScenarioResult, tls: bool) -> String {
    let kind = if tls { "tls h2" } else { "h2c" };
    match result.h2_clients.iter().find(|c| c.kind == kind) {
        Some(c) if c.lost_total() == 0 => format!(
            "; the in-tree {kind} client beside it, which retries only what RFC 9113 says the \
             server did not process, lost none of its {} requests ({} answered after such a \
             retry)",
            c.requests, c.retried
        ),
        Some(c) => format!(
            "; the in-tree {kind} client beside it lost {} of its {} requests",
            c.lost_total(),
            c.requests
        ),
        None => String::new(),
    }
}
