//! What systemd is told (sd_notify(3)) over a whole upgrade, read from a real `NOTIFY_SOCKET`
//! datagram socket. The parent is a `netchild` process, so the variable is set only in its own
//! environment; this test process is a subreaper, so the successor becomes its child and is
//! killed and reaped here.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use grace_tests::{ChildGuard, Reaper, TempDir};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

/// Runs `netchild --mode upgrade` under a notify socket; returns its stdout and every message.
fn upgrade_under_systemd(child_mode: &str) -> (String, Vec<String>) {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = TempDir::new("notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // The successor inherits stdout and stderr and outlives the parent, so neither is read to
    // its end: the parent's one line of stdout is read, and stderr goes to a file.
    let stderr_path = dir.path().join("stderr");
    let parent = Command::new(NETCHILD)
        .args([
            "--mode",
            "upgrade",
            "--child-mode",
            child_mode,
            "--listen",
            "tcp://127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut parent = ChildGuard(parent);
    let mut stdout = String::new();
    BufReader::new(parent.0.stdout.take().unwrap())
        .read_line(&mut stdout)
        .unwrap();
    let status = parent.0.wait().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "stdout {stdout} stderr {stderr}");

    socket.set_nonblocking(true).unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        assert!(messages.len() < 100, "runaway notifications");
    }
    (stdout, messages)
}

#[test]
fn a_completed_upgrade_moves_the_main_pid_to_the_successor() {
    let (stdout, messages) = upgrade_under_systemd("serve");
    let pid: u32 = stdout
        .trim()
        .strip_prefix("upgraded ")
        .and_then(|p| p.parse().ok())
        .expect(&stdout);
    let _reaper = Reaper(pid);

    assert_eq!(messages.len(), 4, "{messages:?}");
    // The first process says it is ready itself.
    assert_eq!(messages[0], "READY=1\n");
    // The upgrade starts: reloading, with the monotonic time systemd requires.
    let reloading: Vec<&str> = messages[1].lines().collect();
    assert_eq!(reloading[0], "RELOADING=1");
    let usec = reloading[1]
        .strip_prefix("MONOTONIC_USEC=")
        .expect(&messages[1]);
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{usec}");
    // The successor never talks to systemd itself (only the main process may move MAINPID):
    // the parent names it, then says ready for it.
    assert_eq!(messages[2], format!("MAINPID={pid}\nREADY=1\n"));
    assert_eq!(messages[3], "STOPPING=1\n");
}

#[test]
fn a_failed_upgrade_says_ready_again() {
    let (stdout, messages) = upgrade_under_systemd("exit1");
    assert!(stdout.starts_with("failed new process"), "{stdout}");
    assert!(stdout.contains("exited with status 1"), "{stdout}");
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[0], "READY=1\n");
    assert!(
        messages[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{messages:?}"
    );
    assert_eq!(messages[2], "READY=1\n");
    assert_eq!(messages[3], "STOPPING=1\n");
}
