//! `broken-binary`: the path gracedemo was started from is swapped to a binary that exits at
//! once, then to one that never reports ready; neither may disturb the serving process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use testkit::fs::{fresh_dir, point_link, write_executable};

use super::super::Env;
use super::super::report::ScenarioResult;
use super::{Scenario, TAIL, WARMUP, finish_loads, start_loads};
use crate::harness::demo::{Config, Demo, Launch};
use crate::harness::load::Kind;
use crate::harness::{interrupt, process};

pub(super) fn run(env: &Env) -> Result<(ScenarioResult, Demo)> {
    let s = Scenario::BrokenBinary;
    let mut result = ScenarioResult::new(&s.name());
    let dir = env.work().join("broken-binary");
    fresh_dir(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    let exits = dir.join("exits-at-once");
    let never = dir.join("never-ready");
    for (path, text) in [
        (
            &exits,
            "#!/bin/sh\n# A new version that fails at once.\nexit 3\n",
        ),
        (
            &never,
            "#!/bin/sh\n# A new version that never reports ready.\nexec sleep 60\n",
        ),
    ] {
        write_executable(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let link = dir.join("gracedemo");
    swap_link(&env.files.binary, &link)?;
    let ready_timeout = Duration::from_secs(1);
    let config = Config {
        launch: Launch::Via(link.clone()),
        ready_timeout,
        ..Config::default()
    };
    let mut demo = Demo::start(&env.files, &s.name(), config)?;
    let phase = ready_timeout + Duration::from_secs(2);
    let planned = WARMUP + phase * 2 + env.interval() + TAIL;
    let loads = start_loads(env, &demo, &mut result, &[Kind::KEEPALIVE], planned)?;
    interrupt::sleep(WARMUP)?;
    let old = demo.current;
    for (n, (what, target)) in [("exits at once", &exits), ("never gets ready", &never)]
        .into_iter()
        .enumerate()
    {
        swap_link(target, &link)?;
        let t0 = Instant::now();
        process::signal(old, Signal::SIGUSR2).with_context(|| format!("SIGUSR2 to {old}"))?;
        // The old pid keeps answering, and only it, until the failure is over.
        let (other, _) = demo.probe_until(t0, phase, |pid| pid != old)?;
        if let Some((pid, _)) = other {
            result.fail(format!(
                "binary that {what}: pid {pid} answered instead of {old}"
            ));
        }
        let failed = demo.metrics_of(old).and_then(|m| {
            m.get("gracehttp_upgrades_total{result=\"failed\"}")
                .copied()
        });
        if failed != Some((n + 1) as f64) {
            result.fail(format!(
                "binary that {what}: gracehttp_upgrades_total{{result=\"failed\"}} is {failed:?}, \
                 expected {}",
                n + 1
            ));
        }
        demo.group.rescan();
        let left: Vec<String> = demo
            .group
            .members()
            .iter()
            .filter(|p| p.pid != old)
            .map(|p| format!("{} ({}, state {})", p.pid, p.comm, p.state))
            .collect();
        if !left.is_empty() {
            result.fail(format!(
                "binary that {what}: left behind {}",
                left.join(", ")
            ));
        }
        let new = demo.group.servers_since(t0);
        if !new.is_empty() {
            result.fail(format!("binary that {what}: new server processes {new:?}"));
        }
    }
    // A good binary again: a normal restart.
    swap_link(&env.files.binary, &link)?;
    let t0 = Instant::now();
    demo.restart(1, env.interval().saturating_sub(Duration::from_millis(100)))?;
    interrupt::sleep_until(t0 + env.interval())?;
    if let Some(rec) = demo.restarts.last() {
        if rec.generation != Some(1) {
            result.fail(format!(
                "the good binary's process reports generation {:?}, expected 1",
                rec.generation
            ));
        }
    }
    finish_loads(&mut result, loads, false, 1)?;
    demo.stop()?;
    result.note("two failed upgrades (exit 3 at once; never ready, killed at the 1 s ready timeout), then one good");
    Ok((result, demo))
}

/// Points `link` at `target` atomically (a new symlink renamed over the old), as a deploy does.
fn swap_link(target: &Path, link: &Path) -> Result<()> {
    point_link(link, target)
        .with_context(|| format!("pointing {} at {}", link.display(), target.display()))
}
