//! What the example servers' tests share beyond the test kit (`testkit`, which spawns and reaps
//! the servers, captures their logs and has the clients): waiting for the process that serves
//! a port or names itself in a pid file, a log with no panic, and in [`demo`] the `gracedemo`
//! launcher.

use std::net::SocketAddr;
use std::path::Path;

use testkit::fs::read_pid;
use testkit::line::Session;
use testkit::{TIMEOUT, wait_until};

/// The `gracedemo` launcher. The echo tests compile this module too, and use none of it.
#[allow(
    dead_code,
    reason = "each gracedemo test target uses a different part; the echo tests use none"
)]
pub(crate) mod demo;

/// Opens new connections to a line server (`echo`) until one is served by a process for which
/// `accept` holds, and returns that pid.
///
/// # Panics
///
/// When none is within [`TIMEOUT`], with the last answer.
pub(crate) fn wait_for_pid(addr: SocketAddr, accept: impl Fn(u32) -> bool) -> u32 {
    let mut last = None;
    let found = wait_until(TIMEOUT, || {
        let answer = Session::tcp(addr).and_then(|mut s| s.pid());
        let found = answer.as_ref().ok().copied().filter(|&pid| accept(pid));
        last = Some(answer);
        found
    });
    found.unwrap_or_else(|| panic!("no fitting pid on {addr} within {TIMEOUT:?}; last: {last:?}"))
}

/// Waits until the pid file at `path` names `pid`.
///
/// # Panics
///
/// When it does not within [`TIMEOUT`], with what the file holds.
pub(crate) fn wait_for_pid_file(path: &Path, pid: u32) {
    let found = wait_until(TIMEOUT, || (read_pid(path) == Some(pid)).then_some(()));
    assert!(
        found.is_some(),
        "{} does not name pid {pid} within {TIMEOUT:?}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

/// Checks that a log holds no panic.
#[track_caller]
pub(crate) fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "a process panicked:\n{log}");
}
