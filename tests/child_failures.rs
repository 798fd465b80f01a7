//! A new process that fails in any way gives its own error, leaves no zombie behind, and
//! changes nothing for the parent, which keeps serving and can upgrade again.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use grace_tests::upgrading_to;
use gracenet::{Error, Net};
use testkit::line::Session;
use testkit::process::is_reaped;
use testkit::procfs::process_exists;
use testkit::{Proc, TIMEOUT, TempDir, wait_until};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

fn net_for(exe: &Path, mode: &str, timeout: Duration) -> Net {
    let args = [
        "--mode",
        mode,
        "--listen",
        "tcp://127.0.0.1:0",
        "--max-seconds",
        "30",
    ];
    upgrading_to(exe, args, timeout).build().unwrap()
}

/// The parent's listener still accepts after the failure.
fn assert_still_serving(listener: &TcpListener) {
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accepted = wait_until(Duration::from_secs(5), || listener.accept().ok());
    assert!(
        accepted.is_some(),
        "the parent's listener no longer accepts"
    );
}

/// Runs an upgrade that must fail, and checks what must hold after any failure.
fn failed_upgrade(net: &Net, listener: &TcpListener) -> Error {
    let err = net.upgrade().expect_err("the upgrade must fail");
    let pid = match &err {
        Error::ChildExited { pid, .. }
        | Error::ChildKilled { pid, .. }
        | Error::ReadyTimeout { pid, .. } => Some(*pid),
        _ => None,
    };
    if let Some(pid) = pid {
        assert!(is_reaped(pid), "pid {pid} is left as a zombie");
        assert!(!process_exists(pid), "pid {pid} still runs");
    }
    assert_still_serving(listener);
    err
}

fn listener(net: &Net) -> TcpListener {
    net.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap()
}

#[test]
fn a_child_that_exits_with_1() {
    let net = net_for(Path::new(NETCHILD), "exit1", TIMEOUT);
    let l = listener(&net);
    match failed_upgrade(&net, &l) {
        Error::ChildExited { code: 1, .. } => {}
        other => panic!("expected ChildExited with 1, got {other:?}"),
    }
}

#[test]
fn a_child_killed_by_a_signal() {
    let net = net_for(Path::new(NETCHILD), "abort", TIMEOUT);
    let l = listener(&net);
    match failed_upgrade(&net, &l) {
        Error::ChildKilled { signal, .. } => assert_eq!(signal, "SIGABRT"),
        other => panic!("expected ChildKilled, got {other:?}"),
    }
}

#[test]
fn a_child_that_never_reports_ready_is_killed_at_the_timeout() {
    let net = net_for(Path::new(NETCHILD), "hang", Duration::from_millis(300));
    let l = listener(&net);
    match failed_upgrade(&net, &l) {
        Error::ReadyTimeout { timeout, .. } => assert_eq!(timeout, Duration::from_millis(300)),
        other => panic!("expected ReadyTimeout, got {other:?}"),
    }
}

#[test]
fn a_missing_executable_is_an_exec_error_not_a_child_that_dies() {
    let dir = TempDir::new("missing").unwrap();
    let net = net_for(&dir.join("no-such-binary"), "serve", TIMEOUT);
    let l = listener(&net);
    match failed_upgrade(&net, &l) {
        Error::Exec { source, path } => {
            assert_eq!(source.kind(), ErrorKind::NotFound);
            assert!(path.ends_with("no-such-binary"));
        }
        other => panic!("expected Exec, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_executable_is_an_exec_error() {
    let dir = TempDir::new("noexec").unwrap();
    let file = dir.join("server");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let net = net_for(&file, "serve", TIMEOUT);
    let l = listener(&net);
    match failed_upgrade(&net, &l) {
        Error::Exec { source, .. } => assert_eq!(source.kind(), ErrorKind::PermissionDenied),
        other => panic!("expected Exec, got {other:?}"),
    }
}

/// A deploy that first puts a broken binary in place, then a good one, at the same path.
#[test]
fn after_failures_an_upgrade_with_a_good_binary_works() {
    let dir = TempDir::new("redeploy").unwrap();
    let link = dir.join("server");
    let broken = dir.script("broken.sh", "#!/bin/sh\nexit 7\n").unwrap();
    symlink(&broken, &link).unwrap();

    let net = net_for(&link, "serve", TIMEOUT);
    let l = listener(&net);
    for _ in 0..3 {
        match failed_upgrade(&net, &l) {
            Error::ChildExited { code: 7, .. } => {}
            other => panic!("expected ChildExited with 7, got {other:?}"),
        }
    }
    std::fs::remove_file(&link).unwrap();
    symlink(NETCHILD, &link).unwrap();
    let pid = net.upgrade().unwrap();
    let _child = Proc::adopt(pid);
    let answer = Session::tcp(l.local_addr().unwrap()).and_then(|mut s| s.pid());
    // Both processes accept on the shared socket now; the parent simply does not call accept.
    assert_eq!(answer.unwrap(), pid);
}

#[test]
fn a_second_upgrade_while_one_is_in_progress_is_refused() {
    let net = net_for(Path::new(NETCHILD), "serve", TIMEOUT);
    let _l = listener(&net);
    let child = net.start_process().unwrap();
    let _child = Proc::adopt(child.pid());
    assert!(matches!(net.upgrade(), Err(Error::UpgradeInProgress)));
    assert!(matches!(net.start_process(), Err(Error::UpgradeInProgress)));
    let pid = child.wait_ready(Some(TIMEOUT)).unwrap();
    assert!(process_exists(pid));
}

#[test]
fn two_restarts_requested_at_once_start_exactly_one_child() {
    let dir = TempDir::new("twice").unwrap();
    let args = [
        "--listen",
        "tcp://127.0.0.1:0",
        "--report-dir",
        dir.path().to_str().unwrap(),
    ];
    let net = Arc::new(upgrading_to(NETCHILD, args, TIMEOUT).build().unwrap());
    let _l = listener(&net);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (net, barrier) = (Arc::clone(&net), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                net.upgrade()
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let pids: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let _children: Vec<Proc> = pids.iter().map(|&p| Proc::adopt(p)).collect();
    assert_eq!(pids.len(), 1, "{results:?}");
    for r in &results {
        assert!(
            matches!(
                r,
                Ok(_) | Err(Error::UpgradeInProgress | Error::Superseded { .. })
            ),
            "{r:?}"
        );
    }
    let reports = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".report"))
        })
        .count();
    assert_eq!(reports, 1, "exactly one child process ran");
    // And after a completed handover, this process refuses to start another.
    assert!(matches!(net.upgrade(), Err(Error::Superseded { pid }) if pid == pids[0]));
}

#[test]
fn a_cancelled_upgrade_kills_the_starting_process_and_allows_the_next() {
    let net = net_for(Path::new(NETCHILD), "hang", Duration::from_secs(30));
    let l = listener(&net);
    let child = net.start_process().unwrap();
    let pid = child.pid();
    let _child = Proc::adopt(pid);
    assert!(net.cancel_upgrade());
    assert!(matches!(child.wait_ready(None), Err(Error::Cancelled)));
    assert!(is_reaped(pid), "pid {pid} is left as a zombie");
    assert!(!process_exists(pid));
    assert!(!net.cancel_upgrade(), "nothing is in progress any more");
    assert_still_serving(&l);
    // The next upgrade may start at once.
    let next = net.start_process().unwrap();
    let _next = Proc::adopt(next.pid());
}

#[test]
fn a_stopping_process_refuses_upgrades_even_one_asked_for_before_it_started() {
    let net = net_for(Path::new(NETCHILD), "hang", Duration::from_secs(30));
    let l = listener(&net);
    let child = net.start_process().unwrap();
    let pid = child.pid();
    let _child = Proc::adopt(pid);
    assert!(net.refuse_upgrades(), "the starting upgrade is cancelled");
    assert!(matches!(child.wait_ready(None), Err(Error::Cancelled)));
    assert!(is_reaped(pid), "pid {pid} is left as a zombie");
    // An upgrade whose thread only gets to start after the stop is refused before any process
    // starts: stopping leaves no successor behind.
    assert!(!net.refuse_upgrades());
    assert!(matches!(net.upgrade(), Err(Error::Stopping)));
    assert_still_serving(&l);
}

#[test]
fn a_final_stop_cancels_an_upgrade_even_when_its_process_is_ready() {
    let net = net_for(Path::new(NETCHILD), "serve", TIMEOUT);
    let _l = listener(&net);
    let child = net.start_process().unwrap();
    let pid = child.pid();
    let _child = Proc::adopt(pid);
    net.close().unwrap();
    // Whether or not the new process reported ready meanwhile, it does not take over.
    assert!(matches!(child.wait_ready(None), Err(Error::Cancelled)));
    assert!(is_reaped(pid), "pid {pid} is left as a zombie");
    assert!(!process_exists(pid));
    assert_eq!(net.superseded(), None);
    assert!(matches!(net.upgrade(), Err(Error::Closed)));
}
