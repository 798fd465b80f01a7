//! Restarts at a fixed interval under load from oha: `keepalive`, `close`, `h2`, `tls`,
//! `double-signal`, `socket-activation`.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::super::Env;
use super::super::report::ScenarioResult;
use super::{Scenario, TAIL, WARMUP, finish_loads, start_loads};
use crate::harness::demo::{Config, Demo};
use crate::harness::interrupt;
use crate::harness::load::Kind;

/// N restarts at a fixed interval under load; `signals(i)` SIGUSR2 per restart. With more than
/// one signal, each restart must make exactly one new generation.
pub(super) fn run(
    env: &Env,
    s: Scenario,
    kinds: &[Kind],
    config: Config,
    signals: impl Fn(usize) -> u32,
) -> Result<(ScenarioResult, Demo)> {
    let mut result = ScenarioResult::new(&s.name());
    let mut demo = Demo::start(&env.files, &s.name(), config)?;
    if s == Scenario::SocketActivation {
        check_activation(&demo, &mut result);
    }
    let (n, interval) = (env.restarts(), env.interval());
    let planned = WARMUP + interval * u32::try_from(n).unwrap_or(u32::MAX) + TAIL;
    let loads = start_loads(env, &demo, &mut result, kinds, planned)?;
    interrupt::sleep(WARMUP)?;
    let mut generation = 0;
    for i in 0..n {
        let t0 = Instant::now();
        let count = signals(i);
        demo.restart(count, interval.saturating_sub(Duration::from_millis(100)))?;
        interrupt::sleep_until(t0 + interval)?;
        if count > 1 {
            check_one_generation(&mut demo, &mut result, i, t0, &mut generation);
        }
    }
    finish_loads(&mut result, loads, false, n)?;
    demo.stop()?;
    if s == Scenario::DoubleSignal {
        // The scan samples; the log does not miss a child: one start per burst, the other
        // signals of each burst refused (or, once the upgrade was done, ignored).
        let log = demo.log_text();
        let started = log.matches("upgrade: starting the new binary").count();
        let refused = log.matches("refused").count();
        if started != n {
            result.fail(format!(
                "{started} upgrades started for {n} bursts of SIGUSR2"
            ));
        }
        result.note(format!(
            "{n} bursts of 2 or 3 SIGUSR2: {started} upgrades started, {refused} signals refused \
             as arriving during an upgrade (the rest arrived after the handover)"
        ));
    }
    Ok((result, demo))
}

/// `double-signal`: the burst made exactly one new server process, one generation later.
fn check_one_generation(
    demo: &mut Demo,
    result: &mut ScenarioResult,
    i: usize,
    t0: Instant,
    generation: &mut u64,
) {
    demo.settle();
    let Some(rec) = demo.restarts.last() else {
        return;
    };
    let new = demo.group.servers_since(t0);
    if new.len() != 1 || Some(new[0]) != rec.new_pid {
        result.fail(format!(
            "burst {} of {} SIGUSR2: new server processes {new:?}, expected exactly the one \
             answering ({:?})",
            i + 1,
            rec.signals,
            rec.new_pid
        ));
    }
    if rec.generation != Some(*generation + 1) {
        result.fail(format!(
            "burst {}: generation {:?} after generation {generation}, expected {}",
            i + 1,
            rec.generation,
            *generation + 1
        ));
    }
    *generation = rec.generation.unwrap_or(*generation + 1);
}

/// `socket-activation`: the first process adopted every socket systemd-socket-activate bound.
fn check_activation(demo: &Demo, result: &mut ScenarioResult) {
    let pid = demo.current;
    let log = demo.log_text();
    let mine = |l: &&str| l.contains("listening") && l.contains(&format!("pid={pid} "));
    let listening: Vec<&str> = log.lines().filter(mine).collect();
    let inherited = listening
        .iter()
        .filter(|l| l.contains("inherited=true"))
        .count();
    if listening.is_empty() || inherited != listening.len() {
        result.fail(format!(
            "the first process (pid {pid}) adopted {inherited} of its {} sockets from \
             systemd-socket-activate",
            listening.len()
        ));
    } else {
        result.note(format!(
            "the first process adopted all {inherited} activated sockets"
        ));
    }
}
