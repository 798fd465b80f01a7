//! Malformed or foreign handover environments give a typed error that names the variable, or
//! are ignored as "not ours"; never a panic. The child reads its real environment, started
//! through `sh` so that `LISTEN_PID` can be its own pid (`exec` keeps the shell's pid).

use std::process::Command;

use testkit::{Finished, spawn_command};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

/// Runs `netchild --mode check` with `vars` to its end; `prelude` runs in the shell first (to
/// open fds). `LISTEN_PID` is set to the child's own pid unless `vars` sets it.
fn check(prelude: &str, vars: &[(&str, &str)]) -> Finished {
    let own_pid = if vars.iter().any(|(k, _)| *k == "LISTEN_PID") {
        ""
    } else {
        "LISTEN_PID=$$ "
    };
    let script = format!("{prelude} {own_pid}exec \"$0\" --mode check");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg(NETCHILD);
    for var in gracenet_vars() {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().copied());
    spawn_command(&mut cmd).finish()
}

fn gracenet_vars() -> [&'static str; 5] {
    [
        gracenet::LISTEN_FDS,
        gracenet::LISTEN_PID,
        gracenet::LISTEN_FDNAMES,
        gracenet::READY_FD,
        gracenet::GENERATION,
    ]
}

/// The child refused to start with one error line that names the variable (and the value).
#[track_caller]
fn assert_refused(o: &Finished, needles: &[&str]) {
    let err = &o.stderr;
    assert_eq!(o.code, 2, "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
}

#[track_caller]
fn assert_started(o: &Finished, needle: &str) {
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    assert!(
        o.stdout.contains(needle),
        "{needle:?} not in {:?}",
        o.stdout
    );
}

#[test]
fn listen_fds_that_is_not_a_number() {
    assert_refused(
        &check("", &[("LISTEN_FDS", "abc")]),
        &["LISTEN_FDS", "\"abc\""],
    );
}

#[test]
fn listen_fds_that_is_negative() {
    assert_refused(
        &check("", &[("LISTEN_FDS", "-1")]),
        &["LISTEN_FDS", "\"-1\""],
    );
}

#[test]
fn listen_fds_of_zero_is_nothing() {
    assert_started(
        &check("", &[("LISTEN_FDS", "0")]),
        "inherited=0 ignored_pid=none",
    );
}

#[test]
fn listen_fds_that_is_huge() {
    for huge in ["4294967296", "99999999999999999999999999"] {
        assert_refused(&check("", &[("LISTEN_FDS", huge)]), &["LISTEN_FDS", huge]);
    }
}

#[test]
fn listen_fds_beyond_the_open_descriptors() {
    assert_refused(
        &check("", &[("LISTEN_FDS", "3")]),
        &["LISTEN_FDS", "fd 3", "not open"],
    );
}

#[test]
fn listen_fdnames_with_the_wrong_count() {
    assert_refused(
        &check("", &[("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "web")]),
        &["LISTEN_FDNAMES", "\"web\"", "1 names for LISTEN_FDS=2"],
    );
}

#[test]
fn listen_pid_of_another_process_is_not_ours() {
    // The variables were left over by an ancestor: ignored, and scrubbed all the same.
    let o = check(
        "exec 3</dev/null;",
        &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")],
    );
    assert_started(
        &o,
        "inherited=0 ignored_pid=1 generation=0 has_parent=false env_clean=true",
    );
}

#[test]
fn listen_pid_that_is_not_a_pid() {
    assert_refused(
        &check("", &[("LISTEN_PID", "me"), ("LISTEN_FDS", "1")]),
        &["LISTEN_PID", "\"me\""],
    );
}

#[test]
fn an_inherited_fd_that_is_not_a_socket() {
    assert_refused(
        &check(
            "exec 3</dev/null;",
            &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "web")],
        ),
        &["fd 3", "\"web\"", "not a socket"],
    );
}

#[test]
fn a_readiness_fd_inside_the_socket_range_or_closed() {
    assert_refused(
        &check("", &[("LISTEN_FDS", "0"), ("GRACENET_READY_FD", "x")]),
        &["GRACENET_READY_FD", "\"x\""],
    );
    assert_refused(
        &check("", &[("LISTEN_FDS", "0"), ("GRACENET_READY_FD", "9")]),
        &["GRACENET_READY_FD", "not an open"],
    );
    assert_refused(
        &check(
            "exec 3</dev/null;",
            &[("LISTEN_FDS", "0"), ("GRACENET_READY_FD", "3")],
        ),
        &["GRACENET_READY_FD", "not a pipe"],
    );
}

#[test]
fn a_clean_start_has_no_parent_and_a_clean_environment() {
    assert_started(
        &check("", &[]),
        "inherited=0 ignored_pid=none generation=0 has_parent=false env_clean=true",
    );
}

#[test]
fn the_protocol_variables_never_reach_the_applications_subprocesses() {
    let o = check(
        "",
        &[
            ("LISTEN_FDS", "0"),
            ("LISTEN_FDNAMES", ""),
            ("GRACENET_GENERATION", "4"),
        ],
    );
    assert_started(&o, "generation=4 has_parent=false env_clean=true");
}
