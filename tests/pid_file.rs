//! Who writes the pid file across an upgrade: the parent, when it commits (step 4 of the
//! handover protocol), so that the successor's path to serving has no file write on it; and
//! the successor afterwards (`claim_pid_file`), for a parent that had no pid file to write.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use grace_tests::upgrading_to;
use gracenet::Net;
use testkit::fs::read_pid;
use testkit::{Proc, TIMEOUT, TempDir, wait_until};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

/// A parent that upgrades to `netchild ARGS...`, with `pid_file` if given.
fn parent(args: &[&str], pid_file: Option<&Path>) -> Net {
    let mut builder = upgrading_to(NETCHILD, args, TIMEOUT);
    if let Some(path) = pid_file {
        builder = builder.pid_file(path);
    }
    builder.build().unwrap()
}

fn upgrade(net: &Net) -> (u32, Proc) {
    let _listener = net.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let pid = net.upgrade().unwrap();
    (pid, Proc::adopt(pid))
}

#[test]
fn the_parent_rewrites_its_pid_file_before_upgrade_returns() {
    let dir = TempDir::new("pidfile-parent").unwrap();
    let path = dir.join("app.pid");
    fs::write(&path, format!("{}\n", std::process::id())).unwrap();
    let net = parent(&["--listen", "tcp://127.0.0.1:0"], Some(&path));
    let old_inode = fs::metadata(&path).unwrap().ino();
    let (pid, _reaper) = upgrade(&net);
    // No wait: the rewrite is part of the commit.
    assert_eq!(read_pid(&path), Some(pid));
    // The replaced file is freed with the `Net`, not on the commit's path.
    assert_eq!(held_inodes(&path), [old_inode]);
    drop(net);
    assert_eq!(held_inodes(&path), []);
}

/// The inodes of the files this process holds open that were once at `path` and are unlinked.
fn held_inodes(path: &Path) -> Vec<u64> {
    let unlinked = format!("{} (deleted)", path.display());
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let fd = e.ok()?.path();
            (fs::read_link(&fd).ok()?.to_str()? == unlinked).then(|| fs::metadata(&fd).ok())?
        })
        .map(|m| m.ino())
        .collect()
}

/// The usual set-up: parent and successor configured with the same pid file. The parent
/// renames the file it prepared while the successor claims it: both name the successor, and
/// neither write gets in the other's way (each has a temporary file of its own).
#[test]
fn parent_and_successor_sharing_a_pid_file_both_name_the_successor() {
    let dir = TempDir::new("pidfile-shared").unwrap();
    let path = dir.join("app.pid");
    for round in 0..5 {
        let net = parent(
            &[
                "--listen",
                "tcp://127.0.0.1:0",
                "--pid-file",
                path.to_str().unwrap(),
                "--report-dir",
                dir.path().to_str().unwrap(),
            ],
            Some(&path),
        );
        let (pid, _reaper) = upgrade(&net);
        let claimed = dir.join(format!("{pid}.claimed"));
        // The successor writes this once its claim returned, which it must (it exits on an
        // error, and the marker never appears).
        assert!(
            wait_until(TIMEOUT, || claimed.exists().then_some(())).is_some(),
            "round {round}: the successor's claim did not succeed"
        );
        assert_eq!(read_pid(&path), Some(pid), "round {round}");
        let temporary: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(temporary.is_empty(), "round {round}: left {temporary:?}");
    }
}

#[test]
fn a_successor_claims_the_pid_file_its_parent_did_not_write() {
    let dir = TempDir::new("pidfile-child").unwrap();
    let path = dir.join("app.pid");
    let net = parent(
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--pid-file",
            path.to_str().unwrap(),
        ],
        None,
    );
    let (pid, _reaper) = upgrade(&net);
    drop(net);
    assert_eq!(
        wait_until(TIMEOUT, || read_pid(&path).filter(|&p| p == pid)),
        Some(pid),
        "the successor never wrote its pid file"
    );
}

#[test]
fn a_failed_upgrade_leaves_the_pid_file_and_nothing_else() {
    let dir = TempDir::new("pidfile-failed").unwrap();
    let path = dir.join("app.pid");
    let me = std::process::id();
    fs::write(&path, format!("{me}\n")).unwrap();
    let net = parent(&["--mode", "exit1"], Some(&path));
    let _listener = net.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = net.upgrade().unwrap_err();
    assert!(
        matches!(err, gracenet::Error::ChildExited { .. }),
        "{err:?}"
    );
    assert_eq!(read_pid(&path), Some(me));
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["app.pid"], "a temporary pid file was left behind");
}
