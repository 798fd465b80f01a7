//! The verdicts every scenario shares, from the restart records: descriptor and memory growth
//! across generations, and how the generations exited.

use std::process::ExitStatus;

use super::report::RestartRecord;

/// Exit 0, or SIGKILL when the harness had to kill the group (reported as left running).
pub(crate) fn exited_cleanly(status: ExitStatus, killed_by_harness: bool) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.success() || (killed_by_harness && status.signal() == Some(libc::SIGKILL))
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
