//! What the cross-crate tests share beyond the test kit (`testkit`, which has the temporary
//! directories, process guards, bounded waits and line clients): a parent `Net` that upgrades
//! to a given program, and reading the report a `netchild` writes.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use gracenet::{Builder, Net};

/// The builder of a parent's `Net` that binds every socket fresh (nothing is inherited from
/// this test process's environment) and upgrades to `exe` run with `args` (`exe` itself is
/// `argv[0]`), waiting at most `ready` for the new process to report ready.
pub fn upgrading_to<S: Into<OsString>>(
    exe: impl AsRef<Path>,
    args: impl IntoIterator<Item = S>,
    ready: Duration,
) -> Builder {
    let exe = exe.as_ref();
    let argv0 = OsString::from(exe.as_os_str());
    Net::builder()
        .inherit(false)
        .executable(exe)
        .args(std::iter::once(argv0).chain(args.into_iter().map(Into::into)))
        .ready_timeout(Some(ready))
}

/// The report a `netchild` wrote to `dir` for `pid`.
pub fn child_report(dir: &Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(dir.join(format!("{pid}.report"))).ok()
}

/// The `inode=` values of the `listener` lines of a netchild report, in order.
pub fn report_inodes(report: &str) -> Vec<u64> {
    report
        .lines()
        .filter(|l| l.starts_with("listener "))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("inode=")))
        .filter_map(|v| v.parse().ok())
        .collect()
}
