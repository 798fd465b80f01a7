//! The verdicts every scenario shares ([`judge`]): at most two live generations, no zombie, no
//! descriptor or memory growth across restarts, every generation exiting 0, every probe
//! answered, no panic in the log.

use nix::sys::signal::Signal;

use crate::harness::demo::Demo;
use crate::harness::process::Exit;
use crate::harness::restart::RestartRecord;

use super::report::ScenarioResult;

/// Adds what every scenario checks to `result`: the restarts and their verdicts (live
/// generations, descriptor and memory growth, zombies), how each generation exited, the
/// probes, and the log. Call after [`Demo::stop`].
pub(crate) fn judge(demo: &mut Demo, result: &mut ScenarioResult) {
    demo.collect_exits(true);
    // The scan samples every few ms and can miss a short overlap; the timings cannot: a
    // generation that exits after its successor's successor answered overlapped with both.
    let times = demo.signal_times.clone();
    for i in 1..demo.restarts.len() {
        let (prev, next) = (&demo.restarts[i - 1], &demo.restarts[i]);
        let prev_exit = prev.to_old_exit.zip(times.get(i - 1)).map(|(d, t)| *t + d);
        let next_new = next.to_new.zip(times.get(i)).map(|(d, t)| *t + d);
        if let (Some(exit), Some(answered)) = (prev_exit, next_new) {
            if exit > answered {
                demo.restarts[i].generations = demo.restarts[i].generations.max(3);
            }
        }
    }
    result.max_generations = demo.group.max_live().max(
        demo.restarts
            .iter()
            .map(|r| r.generations)
            .max()
            .unwrap_or(0),
    );
    result.zombies = demo.group.zombies();
    result.restarts = std::mem::take(&mut demo.restarts);
    result.clients.add(&demo.probes);
    result.failures.append(&mut demo.failures);
    if result.max_generations > 2 {
        result.fail(format!(
            "{} server generations were alive at once (at most 2 allowed)",
            result.max_generations
        ));
    }
    if !result.zombies.is_empty() {
        result.fail(format!(
            "zombies left unreaped by a server for over a second: {:?}",
            result.zombies
        ));
    }
    if let Some(why) = fd_growth(&result.restarts) {
        result.fail(why);
    }
    if let Some(why) = rss_growth(&result.restarts) {
        result.fail(why);
    }
    let killed = demo.group.killed_by_harness();
    for (pid, status) in demo.group.exits() {
        if !exited_cleanly(status, killed) {
            result.fail(format!("server process {pid} exited with {status}"));
        }
    }
    result.log = Some(demo.log.to_string_lossy().into_owned());
    let log = demo.log_text();
    let panics: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("panicked"))
        .take(3)
        .collect();
    if !panics.is_empty() {
        result.fail(format!("the server panicked: {}", panics.join(" | ")));
    }
}

/// Exit 0, or SIGKILL when the harness had to kill the group (reported as left running).
pub(crate) fn exited_cleanly(exit: Exit, killed_by_harness: bool) -> bool {
    exit.success() || (killed_by_harness && exit == Exit::Signal(Signal::SIGKILL))
}

/// Descriptors other than TCP connections may not grow from one generation to the next by more
/// than this (a leak of one descriptor per restart shows after a few restarts).
pub(crate) const FD_SLACK: usize = 2;
/// Resident memory of the last generation may exceed the first's by this factor...
pub(crate) const RSS_FACTOR: f64 = 1.5;
/// ...plus this much, for the allocator's noise under load.
pub(crate) const RSS_SLACK_KIB: u64 = 4 * 1024;

/// Growth of descriptors (TCP connections left out) across generations, measured at the same
/// point of each (just before its restart signal): the last generation may not hold more than
/// [`FD_SLACK`] more than the first, and no generation more than [`FD_SLACK`] over its
/// predecessor.
pub(crate) fn fd_growth(restarts: &[RestartRecord]) -> Option<String> {
    let series: Vec<(u32, usize)> = restarts
        .iter()
        .filter_map(|r| Some((r.old_pid, r.fds_base?)))
        .collect();
    for pair in series.windows(2) {
        let ((p0, a), (p1, b)) = (pair[0], pair[1]);
        if b > a + FD_SLACK {
            return Some(format!(
                "descriptors grew across a restart: pid {p0} held {a} (TCP connections left out), \
                 its successor {p1} {b}, more than {FD_SLACK} over"
            ));
        }
    }
    match (series.first(), series.last()) {
        (Some(&(p0, a)), Some(&(p1, b))) if b > a + FD_SLACK => Some(format!(
            "descriptors grew over the run: pid {p0} held {a} (TCP connections left out), \
             pid {p1} {b}, more than {FD_SLACK} over"
        )),
        _ => None,
    }
}

/// Growth of resident memory over the run: last generation against the first, at the same
/// point, beyond [`RSS_FACTOR`] plus [`RSS_SLACK_KIB`].
pub(crate) fn rss_growth(restarts: &[RestartRecord]) -> Option<String> {
    let series: Vec<(u32, u64)> = restarts
        .iter()
        .filter_map(|r| Some((r.old_pid, r.rss_kib?)))
        .collect();
    let (&(p0, a), &(p1, b)) = (series.first()?, series.last()?);
    let limit = (a as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KIB;
    (b > limit).then(|| {
        format!(
            "resident memory grew over the run: pid {p0} {a} KiB, pid {p1} {b} KiB (limit \
             {limit} KiB: x{RSS_FACTOR} + {RSS_SLACK_KIB} KiB)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pid: u32, fds: usize, rss: u64) -> RestartRecord {
        RestartRecord {
            old_pid: pid,
            fds_base: Some(fds),
            rss_kib: Some(rss),
            ..RestartRecord::default()
        }
    }

    #[test]
    fn only_exit_0_is_clean_unless_the_harness_killed() {
        assert!(exited_cleanly(Exit::Code(0), false));
        assert!(!exited_cleanly(Exit::Code(3), true));
        assert!(!exited_cleanly(Exit::Signal(Signal::SIGKILL), false));
        assert!(exited_cleanly(Exit::Signal(Signal::SIGKILL), true));
        assert!(!exited_cleanly(Exit::Signal(Signal::SIGSEGV), true));
    }

    #[test]
    fn flags_growth_beyond_the_slack_only() {
        let steady = [rec(1, 20, 8000), rec(2, 21, 9000), rec(3, 20, 8500)];
        assert!(fd_growth(&steady).is_none());
        assert!(rss_growth(&steady).is_none());
        let leaking = [
            rec(1, 20, 8000),
            rec(2, 21, 8000),
            rec(3, 22, 8000),
            rec(4, 23, 8000),
        ];
        assert!(fd_growth(&leaking).unwrap().contains("over the run"));
        let jump = [rec(1, 20, 8000), rec(2, 26, 8000)];
        assert!(fd_growth(&jump).unwrap().contains("across a restart"));
        let fat = [rec(1, 20, 8000), rec(2, 20, 30000)];
        assert!(rss_growth(&fat).is_some());
    }
}
