//! End-to-end tests of the `echo` example: real processes, real signals, loopback sockets.

mod util;

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use testkit::fs::point_link;
use testkit::line::Session;
use testkit::{Output, Proc, Spawned, TIMEOUT, TempDir, free_addr, spawn, wait_until, which};

use util::{assert_no_panic, wait_for_pid, wait_for_pid_file};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

/// The exit code of `proc`; on failure, panics with the servers' log.
fn exit_code(proc: &mut Proc, log: &Output) -> i32 {
    proc.wait_exit()
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", log.text()))
}

/// An `echo` serving on TCP, on a unix socket and with a pid file, all in `dir`, once it
/// answers and has written its pid file.
struct Served {
    server: Spawned,
    pid: u32,
    addr: SocketAddr,
    sock: PathBuf,
    pid_file: PathBuf,
}

fn serve_tcp_and_unix(dir: &TempDir) -> Served {
    let sock = dir.join("echo.sock");
    let pid_file = dir.join("echo.pid");
    let addr = free_addr();
    let addr_arg = addr.to_string();
    let args = [
        OsStr::new("--tcp"),
        OsStr::new(&addr_arg),
        OsStr::new("--unix"),
        sock.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ];
    let server = spawn(ECHO, args);
    let pid = server.proc.pid();
    assert_eq!(wait_for_pid(addr, |_| true), pid);
    wait_for_pid_file(&pid_file, pid);
    Served {
        server,
        pid,
        addr,
        sock,
        pid_file,
    }
}

/// Runs `echo` with `args` to its end; returns its exit code and stderr, which holds no panic.
fn run(args: &[&str]) -> (i32, String) {
    let done = spawn(ECHO, args).finish();
    assert_no_panic(&done.stderr);
    (done.code, done.stderr)
}

#[test]
fn upgrade_hands_over_both_sockets_and_drains_the_open_session() {
    let dir = TempDir::new("up").unwrap();
    let Served {
        server: mut old,
        pid: p0,
        addr,
        sock,
        pid_file,
    } = serve_tcp_and_unix(&dir);

    let mut session = Session::tcp(addr).unwrap();
    assert_eq!(session.pid().unwrap(), p0);
    assert_eq!(session.send("hello").unwrap(), "hello");

    old.proc.signal(Signal::SIGUSR2);
    let p1 = wait_for_pid(addr, |pid| pid != p0);
    let mut new = Proc::adopt(p1);
    old.stderr
        .wait_for(&format!("echo[{p0}]: upgrade done: pid {p1} serves now"));
    old.stderr
        .wait_for(&format!("echo[{p0}]: stopped accepting; draining"));
    let log = old.stderr.text();
    for line in [
        format!("echo[{p1}]: serving tcp://{addr} (generation 1, inherited)"),
        format!(
            "echo[{p1}]: serving unix:{} (generation 1, inherited)",
            sock.display()
        ),
    ] {
        assert!(log.contains(&line), "{line:?} missing from:\n{log}");
    }
    wait_for_pid_file(&pid_file, p1);

    // The open session holds the old process, which answers one more line and then closes.
    assert!(
        old.proc.is_running(),
        "the old process left its open session:\n{log}"
    );
    assert_eq!(session.send("still here").unwrap(), "still here");
    session.assert_eof();
    drop(session);
    assert_eq!(exit_code(&mut old.proc, &old.stderr), 0);
    assert!(
        sock.exists(),
        "the old process unlinked the socket file the new one serves on"
    );

    let mut unix = Session::unix(&sock).unwrap();
    assert_eq!(unix.pid().unwrap(), p1);
    assert_eq!(unix.send("over unix").unwrap(), "over unix");
    drop(unix);
    wait_for_pid_file(&pid_file, p1);

    new.signal(Signal::SIGTERM);
    assert_eq!(exit_code(&mut new, &old.stderr), 0);
    assert!(!sock.exists(), "a final stop leaves the socket file behind");
    assert!(
        !pid_file.exists(),
        "a final stop leaves the pid file behind"
    );
    assert_no_panic(&old.stderr.complete());
}

#[test]
fn failed_upgrades_keep_the_old_process_serving() {
    let dir = TempDir::new("fail").unwrap();
    // Deploys replace what this path points to; every upgrade executes the path again.
    let link = dir.join("echo");
    point_link(&link, Path::new(ECHO)).unwrap();
    let exits = dir.script("exits.sh", "#!/bin/sh\nexit 3\n").unwrap();
    let started = dir.join("hangs.started");
    let hangs = dir
        .script(
            "hangs.sh",
            &format!("#!/bin/sh\n: > '{}'\nexec sleep 60\n", started.display()),
        )
        .unwrap();
    let addr = free_addr();
    let args = [
        "--tcp".to_owned(),
        addr.to_string(),
        "--ready-timeout".to_owned(),
        "2s".to_owned(),
    ];
    let mut old = spawn(&link, args);
    let p0 = old.proc.pid();
    assert_eq!(wait_for_pid(addr, |_| true), p0);
    let mut session = Session::tcp(addr).unwrap();
    assert_eq!(session.pid().unwrap(), p0);

    // A new version that exits at once.
    point_link(&link, &exits).unwrap();
    old.proc.signal(Signal::SIGUSR2);
    old.stderr.wait_for(&format!(
        "echo[{p0}]: upgrade failed, still serving: new process"
    ));
    old.stderr
        .wait_for("exited with status 3 before it was ready");
    assert_eq!(Session::tcp(addr).unwrap().pid().unwrap(), p0);
    assert_eq!(session.send("after exit 3").unwrap(), "after exit 3");

    // A new version that never reports ready, and a second request while it is starting.
    point_link(&link, &hangs).unwrap();
    old.proc.signal(Signal::SIGUSR2);
    let running = wait_until(TIMEOUT, || started.exists().then_some(()));
    assert!(
        running.is_some(),
        "the hanging version never ran:\n{}",
        old.stderr.text()
    );
    old.proc.signal(Signal::SIGUSR2);
    old.stderr.wait_for(&format!(
        "echo[{p0}]: SIGUSR2 refused: an upgrade is already in progress"
    ));
    old.stderr
        .wait_for("did not report ready within 2s; it was killed");
    assert_eq!(Session::tcp(addr).unwrap().pid().unwrap(), p0);
    assert_eq!(session.send("after a hang").unwrap(), "after a hang");

    // The good binary again: the next request works.
    point_link(&link, Path::new(ECHO)).unwrap();
    old.proc.signal(Signal::SIGUSR2);
    let p1 = wait_for_pid(addr, |pid| pid != p0);
    let mut new = Proc::adopt(p1);
    old.stderr
        .wait_for(&format!("echo[{p0}]: stopped accepting; draining"));
    assert_eq!(session.send("last line").unwrap(), "last line");
    session.assert_eof();
    drop(session);
    assert_eq!(exit_code(&mut old.proc, &old.stderr), 0);

    new.signal(Signal::SIGTERM);
    assert_eq!(exit_code(&mut new, &old.stderr), 0);
    let log = old.stderr.text();
    assert_eq!(
        log.matches("upgrade done").count(),
        1,
        "exactly one upgrade completes:\n{log}"
    );
    assert_no_panic(&log);
}

#[test]
fn runs_under_systemd_socket_activation() {
    let Some(activate) = which("systemd-socket-activate") else {
        panic!(
            "systemd-socket-activate is not on PATH: install Debian's `systemd` package \
             (apt-get install systemd), which provides it"
        );
    };
    let addr = free_addr();
    let args = [
        "-l".to_owned(),
        addr.to_string(),
        ECHO.to_owned(),
        "--tcp".to_owned(),
        addr.to_string(),
    ];
    let mut old = spawn(activate, args);
    // systemd-socket-activate binds, then execs the program in its own process.
    let p0 = old.proc.pid();
    assert_eq!(wait_for_pid(addr, |_| true), p0, "{}", old.stderr.text());
    let mut session = Session::tcp(addr).unwrap();
    assert_eq!(session.send("activated").unwrap(), "activated");
    drop(session);
    let serving = format!("echo[{p0}]: serving tcp://{addr} (generation 0, inherited)");
    assert!(
        old.stderr.text().contains(&serving),
        "{}",
        old.stderr.text()
    );

    old.proc.signal(Signal::SIGUSR2);
    let p1 = wait_for_pid(addr, |pid| pid != p0);
    let mut new = Proc::adopt(p1);
    assert_eq!(exit_code(&mut old.proc, &old.stderr), 0);
    let serving = format!("echo[{p1}]: serving tcp://{addr} (generation 1, inherited)");
    assert!(
        old.stderr.text().contains(&serving),
        "{}",
        old.stderr.text()
    );
    assert_eq!(Session::tcp(addr).unwrap().pid().unwrap(), p1);

    new.signal(Signal::SIGTERM);
    assert_eq!(exit_code(&mut new, &old.stderr), 0);
    assert!(
        TcpStream::connect_timeout(&addr, TIMEOUT).is_err(),
        "something still listens on {addr}"
    );
    assert_no_panic(&old.stderr.complete());
}

#[test]
fn stop_signal_closes_the_ports_and_drains_the_open_session() {
    let dir = TempDir::new("stop").unwrap();
    let Served {
        mut server,
        pid,
        addr,
        sock,
        pid_file,
    } = serve_tcp_and_unix(&dir);
    let mut session = Session::unix(&sock).unwrap();
    assert_eq!(session.pid().unwrap(), pid);

    server.proc.signal(Signal::SIGINT);
    server
        .stderr
        .wait_for(&format!("echo[{pid}]: stopped accepting; draining"));
    assert!(
        server.proc.is_running(),
        "the open session was not waited for"
    );
    // A final stop closes the ports at once: new clients are refused rather than queued in a
    // backlog nobody accepts from, and the files are gone, while the open session goes on.
    assert!(!sock.exists(), "the socket file outlived the stop");
    assert!(!pid_file.exists(), "the pid file outlived the stop");
    let refused = std::net::TcpStream::connect(addr).map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(session.send("bye").unwrap(), "bye");
    session.assert_eof();
    drop(session);

    assert_eq!(exit_code(&mut server.proc, &server.stderr), 0);
    assert!(!sock.exists(), "the socket file is left behind");
    assert!(!pid_file.exists(), "the pid file is left behind");
    assert_no_panic(&server.stderr.complete());
}

#[test]
fn the_drain_timeout_bounds_silent_sessions() {
    let addr = free_addr();
    let args = [
        "--tcp".to_owned(),
        addr.to_string(),
        "--drain-timeout".to_owned(),
        "200ms".to_owned(),
    ];
    let mut server = spawn(ECHO, args);
    let pid = server.proc.pid();
    assert_eq!(wait_for_pid(addr, |_| true), pid);
    let mut silent = Session::tcp(addr).unwrap();
    assert_eq!(silent.pid().unwrap(), pid);

    server.proc.signal(Signal::SIGTERM);
    assert_eq!(exit_code(&mut server.proc, &server.stderr), 0);
    silent.assert_eof();
    let log = server.stderr.complete();
    assert!(
        log.contains(&format!("echo[{pid}]: drain timeout: dropping")),
        "{log}"
    );
    assert_no_panic(&log);
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    let cases: [(&[&str], &str); 8] = [
        (&["--bogus"], "--bogus"),
        (&["--tcp", "notanaddr"], "notanaddr"),
        (&["--ready-timeout", "5parsecs"], "5parsecs"),
        (&["--ready-timeout", "0s"], "0s"),
        (
            &["--drain-timeout=18446744073709551615s"],
            "18446744073709551615s",
        ),
        (&["--tcp"], "--tcp"),
        (&["--unix", ""], "--unix"),
        (&["stray"], "stray"),
    ];
    for (args, value) in cases {
        let (code, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("echo: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[0].split('=').next().unwrap_or_default()),
            "{stderr}"
        );
        assert!(stderr.contains(value), "{args:?}: {stderr}");
    }
}

#[test]
fn an_address_in_use_exits_1_naming_it() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let (code, stderr) = run(&["--tcp", &addr.to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
}

#[test]
fn a_malformed_listen_environment_exits_1_naming_the_variable() {
    // `exec` keeps the shell's pid, so LISTEN_PID names the echo process, as systemd would.
    let script = r#"LISTEN_PID=$$ LISTEN_FDS=abc exec "$0" --tcp "$1""#;
    let addr = free_addr().to_string();
    let done = spawn("/bin/sh", ["-c", script, ECHO, &addr]).finish();
    let (code, stderr) = (done.code, done.stderr);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("echo: "), "{stderr}");
    assert!(
        stderr.contains("LISTEN_FDS") && stderr.contains("abc"),
        "{stderr}"
    );
    assert_no_panic(&stderr);
}

#[test]
fn help_exits_0_and_lists_the_flags() {
    let done = spawn(ECHO, ["--help"]).finish();
    assert_eq!(done.code, 0, "{}", done.stderr);
    let usage = done.stdout;
    for flag in [
        "--tcp",
        "--unix",
        "--pid-file",
        "--ready-timeout",
        "--drain-timeout",
    ] {
        assert!(usage.contains(flag), "{flag} missing from:\n{usage}");
    }
}
