//! A final stop removes the unix socket files this library created, and leaves alone the
//! ones systemd created (socket activation), whose socket outlives the service.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use grace_tests::{ChildGuard, TempDir, wait_for, which};

trait WaitOutput {
    fn wait_with_output_ref(&mut self) -> (ExitStatus, String, String);
}

impl WaitOutput for std::process::Child {
    /// Waits and reads both pipes (small outputs), leaving the `Child` in place for its guard.
    fn wait_with_output_ref(&mut self) -> (ExitStatus, String, String) {
        let status = self.wait().expect("wait");
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, out, err)
    }
}

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

fn close_with(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("closed"),
        "stdout {stdout} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_socket_file_this_library_created_is_removed_on_a_final_stop() {
    let dir = TempDir::new("ownfile");
    let path = dir.path().join("own.sock");
    let spec = format!("unix:{}", path.display());
    close_with(NETCHILD, &["--mode", "close", "--listen", &spec]);
    assert!(!path.exists(), "the socket file outlived the final stop");
}

#[test]
fn a_socket_file_systemd_created_is_left_alone() {
    let activate = which("systemd-socket-activate").expect(
        "systemd-socket-activate on PATH: install Debian's systemd package (cargo xtask test does)",
    );
    let dir = TempDir::new("sdfile");
    let path = dir.path().join("activated.sock");
    let spec = format!("unix:{}", path.display());
    let child = Command::new(&activate)
        .args([
            "-l",
            path.to_str().unwrap(),
            NETCHILD,
            "--mode",
            "close",
            "--listen",
            &spec,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    // systemd-socket-activate starts the program on the first connection.
    let connected = wait_for(Duration::from_secs(10), || UnixStream::connect(&path).ok());
    assert!(
        connected.is_some(),
        "systemd-socket-activate never listened"
    );
    let out = child.0.wait_with_output_ref();
    assert!(out.0.success() && out.1.contains("closed"), "{out:?}");
    assert!(path.exists(), "the socket file systemd created was removed");
}
