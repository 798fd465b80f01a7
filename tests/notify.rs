//! What systemd is told (sd_notify(3)) over a whole upgrade, read from a real `NOTIFY_SOCKET`
//! datagram socket. The parent is a `netchild` process, so the variable is set only in its own
//! environment; it is spawned in a process group of its own and this test process is a
//! subreaper, so the successor becomes this process's child and is killed and reaped with the
//! group.

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use testkit::{Spawned, TIMEOUT, TempDir, spawn_command};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

/// Runs `netchild --mode upgrade` under a notify socket; returns the parent's one line of
/// stdout, every message, and the process group (kept by the caller until the end, so that the
/// successor lives until then).
fn upgrade_under_systemd(child_mode: &str) -> (String, Vec<String>, Spawned) {
    let dir = TempDir::new("notify").unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();

    // The successor inherits stdout and stderr and outlives the parent, so neither is read to
    // its end: the parent's one line of stdout is waited for.
    let mut parent = spawn_command(
        Command::new(NETCHILD)
            .args([
                "--mode",
                "upgrade",
                "--child-mode",
                child_mode,
                "--listen",
                "tcp://127.0.0.1:0",
            ])
            .env("NOTIFY_SOCKET", &socket_path),
    );
    let code = parent.proc.wait_exit();
    parent.stdout.wait_for("\n");
    let stdout = parent
        .stdout
        .text()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let stderr = parent.stderr.text();
    assert_eq!(code, Ok(0), "stdout {stdout} stderr {stderr}");

    socket.set_nonblocking(true).unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        assert!(messages.len() < 100, "runaway notifications");
    }
    (stdout, messages, parent)
}

#[test]
fn a_completed_upgrade_moves_the_main_pid_to_the_successor() {
    let (stdout, messages, _group) = upgrade_under_systemd("serve");
    let pid: u32 = stdout
        .trim()
        .strip_prefix("upgraded ")
        .and_then(|p| p.parse().ok())
        .expect(&stdout);

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
    let (stdout, messages, _group) = upgrade_under_systemd("exit1");
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
