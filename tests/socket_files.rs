//! A final stop removes the unix socket files this library created, and leaves alone the
//! ones systemd created (socket activation), whose socket outlives the service.

use std::os::unix::net::UnixStream;

use testkit::{TIMEOUT, TempDir, spawn, wait_until, which};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

/// Runs `program` with `args` to its end (at most [`TIMEOUT`]) and checks that it exited 0
/// saying `closed`; returns its stdout.
fn close_with(program: &str, args: &[&str]) -> String {
    let done = spawn(program, args).finish();
    assert!(
        done.code == 0 && done.stdout.contains("closed"),
        "exit code {} stdout {} stderr {}",
        done.code,
        done.stdout,
        done.stderr
    );
    done.stdout
}

#[test]
fn a_socket_file_this_library_created_is_removed_on_a_final_stop() {
    let dir = TempDir::new("ownfile").unwrap();
    let path = dir.join("own.sock");
    let spec = format!("unix:{}", path.display());
    close_with(NETCHILD, &["--mode", "close", "--listen", &spec]);
    assert!(!path.exists(), "the socket file outlived the final stop");
}

#[test]
fn a_socket_file_systemd_created_is_left_alone() {
    let activate = which("systemd-socket-activate").expect(
        "systemd-socket-activate on PATH: install Debian's systemd package (cargo xtask test does)",
    );
    let dir = TempDir::new("sdfile").unwrap();
    let path = dir.join("activated.sock");
    let spec = format!("unix:{}", path.display());
    let activated = spawn(
        &activate,
        [
            "-l",
            path.to_str().unwrap(),
            NETCHILD,
            "--mode",
            "close",
            "--listen",
            &spec,
        ],
    );
    // systemd-socket-activate starts the program on the first connection.
    let connected = wait_until(TIMEOUT, || UnixStream::connect(&path).ok());
    assert!(
        connected.is_some(),
        "systemd-socket-activate never listened"
    );
    let done = activated.finish();
    assert!(done.code == 0 && done.stdout.contains("closed"), "{done:?}");
    assert!(path.exists(), "the socket file systemd created was removed");
}
