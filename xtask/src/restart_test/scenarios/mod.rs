//! The scenarios and their verdicts. Each returns its server, stopped, so that [`run`] can add
//! the checks every scenario shares ([`judge`]): at most two live generations, no descriptor or
//! memory growth across restarts, no zombie, every generation exiting 0, the pid file naming
//! the new pid, every probe answered.

mod broken;
mod idle;
mod slow;
mod under_load;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;
use testkit::http::Target;

use super::Env;
use super::h2load::{self, H2Load, H2Stats};
use super::report::ScenarioResult;
use super::verdict::judge;
use crate::harness::demo::{Config, Demo, Launch};
use crate::harness::load::{self, Kind, Load, Proto};

/// Load before the first restart, so every connection is open and busy when it comes.
pub(super) const WARMUP: Duration = Duration::from_millis(500);
/// Load after the last restart's interval.
pub(super) const TAIL: Duration = Duration::from_millis(500);

/// The scenarios, by name on the command line; each one's doc comment is its verdict, which
/// `--help` and `--list` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// HTTP/1.1 keep-alive load, N restarts at a fixed interval: every request succeeds
    #[value(name = "keepalive")]
    KeepAlive,
    /// HTTP/1.1, a new connection per request, N restarts: every request succeeds
    Close,
    /// h2c (prior knowledge) load, N restarts: every request succeeds
    H2,
    /// TLS load, h2 and HTTP/1.1 side by side, N restarts: every request succeeds
    Tls,
    /// 1-5 s requests spanning restarts (and keep-alive load): each answered by the pid that
    /// accepted its connection, none lost, at least one spanned a restart
    Slow,
    /// keep-alive connections idle across a restart, then reused: no reset, no lost request (a
    /// clean close before any response byte, then a successful retry, is fine)
    IdleReuse,
    /// the binary path swapped to one that exits at once, then one never ready: the old pid
    /// serves throughout with zero errors and no new generation; then a good binary restarts
    /// cleanly
    BrokenBinary,
    /// bursts of two or three SIGUSR2 under load: exactly one new generation each time,
    /// generation number +1, every request succeeds
    DoubleSignal,
    /// started by systemd-socket-activate (named fds), N restarts under load: sockets adopted,
    /// every request succeeds
    SocketActivation,
    /// load and slow requests, then SIGTERM: requests in flight complete, the process exits
    /// within the stop timeout, nothing left running
    Sigterm,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub(crate) fn all() -> &'static [Scenario] {
        Scenario::value_variants()
    }

    /// Its name on the command line.
    pub(crate) fn name(self) -> String {
        let value = self.to_possible_value();
        value.map(|v| v.get_name().to_owned()).unwrap_or_default()
    }

    /// What it does and when it passes (its doc comment).
    pub(crate) fn verdict(self) -> String {
        let help = self.to_possible_value().and_then(|v| v.get_help().cloned());
        help.map(|h| h.to_string()).unwrap_or_default()
    }
}

/// Runs scenario `s`, then the checks every scenario shares ([`judge`]).
pub(crate) fn run(env: &Env, s: Scenario) -> Result<ScenarioResult> {
    let ka = Kind::KEEPALIVE;
    let one = |_: usize| 1;
    let (mut result, mut demo) = match s {
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
    }?;
    judge(&mut demo, &mut result);
    Ok(result)
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
        let burst = capacity.map(|c| format!("; an unthrottled burst did {c:.0} req/s"));
        let secs = planned.as_secs_f64();
        result.note(format!(
            "{}: {rate} req/s for {secs:.1} s ({requests} requests{})",
            k.name(),
            burst.unwrap_or_default()
        ));
        plans.push(Load {
            kind: k,
            url: demo.url(k)?,
            rate: Some(rate),
            requests,
            ca: k.tls.then(|| env.ca.clone()),
        });
        if k.proto == Proto::H2 {
            let rate = rate.min(h2load::RATE);
            let addr = demo.load_addr(k)?;
            h2_plans.push(h2load::Plan {
                target: if k.tls {
                    Target::tls(addr, Arc::clone(&env.h2_tls))
                } else {
                    Target::plain(addr)
                },
                rate,
                requests: (rate as f64 * planned.as_secs_f64()) as u64,
            });
        }
    }
    // Calibration first (above), then every load at once.
    for (i, load) in plans.iter().enumerate() {
        let tag = format!("{}-oha-{i}", result.name);
        running.push(load::start(&env.oha, load, env.work(), &tag)?);
    }
    let mut h2 = Vec::new();
    for plan in h2_plans {
        h2.push(H2Load::start(plan)?);
    }
    Ok(Loads { oha: running, h2 })
}

/// Waits for the loads and adds them to the result. Any request not answered 2xx fails the
/// scenario, except refusals when `refused_ok` (oha goes on after a final stop closed the ports)
/// and oha's HTTP/2 requests caught by a draining server's GOAWAY (dropped unsent, "operation
/// was canceled"; or refused by the final GOAWAY, hyper's "http2 error", whose cause oha does
/// not print): at most one per oha worker per restart (measured: exactly one), since oha's
/// HTTP/2 workers do not check the connection before a request. Why these were not processed,
/// and why every request of the in-tree client beside oha must succeed: see `h2load`.
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
                     allowed, one per oha worker (see finish_loads; the note of the in-tree \
                     client beside it says whether it lost any request)",
                    conns * streams,
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
