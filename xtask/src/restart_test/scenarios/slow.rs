//! Requests in flight across a restart or a stop: `slow` and `sigterm`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::super::Env;
use super::super::clients::SlowClients;
use super::super::report::ScenarioResult;
use super::{Scenario, finish_loads, start_loads};
use crate::harness::demo::{Config, Demo};
use crate::harness::interrupt;
use crate::harness::load::Kind;
use crate::harness::restart::ms;

/// `slow`: 1-5 s requests spanning restarts, with keep-alive load besides.
pub(super) fn slow(env: &Env) -> Result<(ScenarioResult, Demo)> {
    let s = Scenario::Slow;
    let mut result = ScenarioResult::new(&s.name());
    let mut demo = Demo::start(&env.files, &s.name(), Config::default())?;
    // The old generation drains its slow requests (up to 5 s) before it exits; restarting
    // sooner than that would have three generations alive.
    let interval = env.interval().max(Duration::from_secs(6));
    let n = env.restarts();
    let lead = Duration::from_secs(3);
    let planned = lead + interval * u32::try_from(n).unwrap_or(u32::MAX);
    let loads = start_loads(env, &demo, &mut result, &[Kind::KEEPALIVE], planned)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + planned.saturating_sub(Duration::from_secs(5));
    let slow = SlowClients::start(demo.ports.http[1], 6, (1000, 5000), until, stopping);
    // Let slow requests get in flight before the first restart.
    interrupt::sleep(lead)?;
    for _ in 0..n {
        let t0 = Instant::now();
        demo.restart(1, interval.saturating_sub(Duration::from_millis(200)))?;
        interrupt::sleep_until(t0 + interval)?;
    }
    let stats = slow.finish();
    finish_loads(&mut result, loads, false, n)?;
    demo.stop()?;
    let spanning = stats.spanning(&demo.signal_times);
    result.clients.add(&stats.tally.outcomes);
    result.detail("slow_completed", stats.completed.len());
    result.detail("slow_spanning_a_restart", spanning);
    result.detail("slow_retried_on_draining_connection", stats.retried);
    result.note(format!(
        "{} slow requests completed, {spanning} of them in flight across a restart, each \
         answered by the pid that accepted its connection; {} retried (accepted by a draining \
         pid)",
        stats.completed.len(),
        stats.retried
    ));
    for f in &stats.tally.failures {
        result.fail(format!("slow request: {f}"));
    }
    if spanning == 0 {
        result.fail("no slow request was in flight across a restart: nothing was tested");
    }
    Ok((result, demo))
}

/// `sigterm`: load and slow requests, then SIGTERM.
pub(super) fn sigterm(env: &Env) -> Result<(ScenarioResult, Demo)> {
    let s = Scenario::Sigterm;
    let mut result = ScenarioResult::new(&s.name());
    let config = Config::default();
    let stop_timeout = config.stop_timeout;
    let mut demo = Demo::start(&env.files, &s.name(), config)?;
    let before = Duration::from_secs(2);
    let after = Duration::from_secs(1);
    let loads = start_loads(env, &demo, &mut result, &[Kind::KEEPALIVE], before + after)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + before + after;
    let slow = SlowClients::start(
        demo.ports.http[1],
        4,
        (1000, 3000),
        until,
        Arc::clone(&stopping),
    );
    interrupt::sleep(before)?;
    stopping.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    // SIGTERM, then the exit, then the group empty (whatever is left is killed, and fails).
    let exited = demo.stop()?;
    let stats = slow.finish();
    finish_loads(&mut result, loads, true, 0)?;
    let in_flight = stats.spanning(&[t0]);
    result.clients.add(&stats.tally.outcomes);
    result.detail("exit_after_sigterm_ms", ms(exited));
    result.detail("slow_in_flight_at_sigterm", in_flight);
    match exited {
        Some(d) if d <= stop_timeout => result.note(format!(
            "exited {:.0} ms after SIGTERM (stop timeout {stop_timeout:?}); {in_flight} slow \
             requests in flight at SIGTERM all completed",
            d.as_secs_f64() * 1000.0
        )),
        Some(d) => result.fail(format!(
            "exited {d:?} after SIGTERM, past the stop timeout {stop_timeout:?}"
        )),
        None => result.fail(format!(
            "still running {:?} after SIGTERM",
            demo.drain_limit() + Duration::from_secs(2)
        )),
    }
    for f in &stats.tally.failures {
        result.fail(format!("slow request: {f}"));
    }
    if in_flight == 0 {
        result.fail("no slow request was in flight at SIGTERM: nothing was tested");
    }
    // The port is closed: nothing answers any more.
    if std::net::TcpStream::connect_timeout(&demo.ports.http[0], Duration::from_secs(1)).is_ok() {
        result.fail(format!(
            "something still accepts on {} after the stop",
            demo.ports.http[0]
        ));
    }
    Ok((result, demo))
}
