//! Cargo, as xtask calls it: through `$CARGO` (the cargo that runs xtask), in release for the
//! binaries under test, reading its JSON messages for the executable's path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The cargo that runs xtask (`$CARGO`), else `cargo` on `PATH`.
pub(crate) fn program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A command running [`program`] with `args`, in the workspace root.
pub(crate) fn command(args: &[&str]) -> Result<Command> {
    let mut command = Command::new(program());
    command.current_dir(workspace_root()?).args(args);
    Ok(command)
}

/// What a command is called in an error: its program and arguments.
pub(crate) fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

pub(crate) fn workspace_root() -> Result<PathBuf> {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}

/// Builds `bin` of the examples package in release (`--locked`, the workspace's own target
/// directory) and returns the executable's path, as cargo reports it.
pub(crate) fn build_release(bin: &str) -> Result<PathBuf> {
    build(bin, None)
}

/// Builds `bin` as [`build_release`] does, but linked statically (glibc's static-pie:
/// `-C target-feature=+crt-static` added to `RUSTFLAGS`, which needs an explicit `--target`,
/// here cargo's host, so that build scripts and proc-macros stay dynamic). `Ok(None)` on a host
/// that is not `*-linux-gnu`.
pub(crate) fn build_release_static(bin: &str) -> Result<Option<PathBuf>> {
    let mut command = command(&["-vV"])?;
    let out = command
        .output()
        .with_context(|| format!("running {}", describe(&command)))?;
    if !out.status.success() {
        bail!("{} failed ({})", describe(&command), out.status);
    }
    let info = String::from_utf8_lossy(&out.stdout);
    let host = info
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::trim)
        .with_context(|| format!("{} named no host", describe(&command)))?;
    if !host.ends_with("-linux-gnu") {
        return Ok(None);
    }
    build(bin, Some(host)).map(Some)
}

/// One line of `--message-format=json`, the fields read here.
#[derive(Debug, Deserialize)]
struct Message {
    reason: String,
    target: Option<Target>,
    executable: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Target {
    name: String,
}

/// The executable of `bin` among cargo's messages, one JSON object a line.
fn executable(stdout: &str, bin: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Message>(l).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter(|m| m.target.as_ref().is_some_and(|t| t.name == bin))
        .find_map(|m| m.executable)
}

fn build(bin: &str, static_target: Option<&str>) -> Result<PathBuf> {
    let mut command = command(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "grace-examples",
        "--bin",
        bin,
        "--message-format=json-render-diagnostics",
    ])?;
    let mut how = format!("cargo build --release --locked -p grace-examples --bin {bin}");
    if let Some(target) = static_target {
        // Added to the flags the default build gets, if any, so that linking is the only
        // difference.
        let flags = match std::env::var("RUSTFLAGS") {
            Ok(f) if !f.trim().is_empty() => format!("{f} -C target-feature=+crt-static"),
            _ => "-C target-feature=+crt-static".to_owned(),
        };
        command.args(["--target", target]).env("RUSTFLAGS", flags);
        how = format!("RUSTFLAGS=\"-C target-feature=+crt-static\" {how} --target {target}");
    }
    eprintln!("xtask: building {bin} ({how})");
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", describe(&command)))?;
    if !out.status.success() {
        bail!("building {bin} failed ({}): {how}", out.status);
    }
    executable(&String::from_utf8_lossy(&out.stdout), bin)
        .with_context(|| format!("cargo did not report the executable of {bin}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executable_among_cargo_messages() {
        let stdout = r#"{"reason":"compiler-artifact","target":{"name":"gracenet"},"executable":null}
not json
{"reason":"compiler-artifact","target":{"name":"gracedemo"},"executable":"/t/release/gracedemo"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(stdout, "gracedemo"),
            Some(PathBuf::from("/t/release/gracedemo"))
        );
        assert_eq!(executable(stdout, "gracenet"), None);
        assert_eq!(executable(stdout, "bare"), None);
    }
}
