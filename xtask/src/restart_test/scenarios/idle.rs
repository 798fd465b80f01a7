//! `idle-reuse`: keep-alive connections idle across a restart, reused at moments spread over
//! the old process's drain. Its idle connections close once idle for 250 ms (and at most 1 s
//! into the drain), so the reuses are spread over the first 400 ms after the signal: some
//! before that close, some right at it (the race a keep-alive client has to live with), most
//! after it.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::super::Env;
use super::super::clients::{self, IdleStats};
use super::super::report::ScenarioResult;
use super::Scenario;
use crate::harness::demo::{Config, Demo};
use crate::harness::interrupt;

pub(super) fn run(env: &Env) -> Result<(ScenarioResult, Demo)> {
    let s = Scenario::IdleReuse;
    let mut result = ScenarioResult::new(&s.name());
    let mut demo = Demo::start(&env.files, &s.name(), Config::default())?;
    let addr = demo.ports.http[0];
    let conns_per_restart = 24;
    let spread = Duration::from_millis(400);
    let mut stats = IdleStats::default();
    for _ in 0..env.restarts() {
        // Everything the restart records is taken first: from here on, timing matters.
        demo.settle();
        demo.snapshot();
        let conns = clients::open_idle(addr, conns_per_restart, &mut stats);
        // Idle for a moment before the restart.
        interrupt::sleep(Duration::from_millis(50))?;
        demo.restart(1, Duration::ZERO)?;
        let t0 = demo
            .signal_times
            .last()
            .copied()
            .unwrap_or_else(Instant::now);
        let step = spread / u32::try_from(conns.len().max(1)).unwrap_or(1);
        for (j, conn) in conns.into_iter().enumerate() {
            interrupt::sleep_until(t0 + step * u32::try_from(j).unwrap_or(0))?;
            clients::reuse(conn, addr, &mut stats);
        }
        interrupt::sleep_until(t0 + spread + Duration::from_millis(1000))?;
    }
    demo.stop()?;
    result.clients.add(&stats.tally.outcomes);
    for (k, v) in [
        ("reused_and_answered", stats.reused),
        ("closed_while_idle_then_retried", stats.closed_idle),
        (
            "closed_after_send_before_response_then_retried",
            stats.closed_after_send,
        ),
        ("resets", stats.resets),
    ] {
        result.detail(k, v);
    }
    result.note(format!(
        "idle connections reused: {} answered on the old connection, {} found closed (clean \
         FIN) and retried, {} closed after the request before any response byte and retried, \
         {} reset",
        stats.reused, stats.closed_idle, stats.closed_after_send, stats.resets
    ));
    for f in &stats.tally.failures {
        result.fail(format!("idle reuse: {f}"));
    }
    if stats.resets > 0 {
        result.fail(format!(
            "{} reused idle connections were reset",
            stats.resets
        ));
    }
    Ok((result, demo))
}
