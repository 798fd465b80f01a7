//! `cargo xtask test`: installs what the tests need on a fresh machine, then runs them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Programs the tests start, and the Debian package that provides each.
const NEEDED: &[(&str, &str)] = &[
    // systemd's own socket activation tool drives the socket-activation tests.
    ("systemd-socket-activate", "systemd"),
    // A child process not written with the library is a python3 script.
    ("python3", "python3"),
    // An RSA key in PKCS#1 form for the TLS tests (ring cannot generate RSA keys).
    ("openssl", "openssl"),
];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    install_missing()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["test", "--workspace", "--locked"])
        .args(args)
        .status()
        .with_context(|| format!("running {cargo} test"))?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

/// Installs the Debian packages of any missing program, so that a fresh clone needs nothing
/// installed by hand.
pub(crate) fn install_missing() -> anyhow::Result<()> {
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(prog, _)| which(prog).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing Debian packages the tests need: {}",
        missing.join(" ")
    );
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo", "-n"] };
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            cmd.args(&sudo[1..]).arg("apt-get");
        }
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!(
                "apt-get {} failed ({status}); install {} by hand",
                args.join(" "),
                missing.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)?;
    for (prog, pkg) in NEEDED {
        if which(prog).is_none() {
            bail!("{prog} is still missing after installing {pkg}");
        }
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
