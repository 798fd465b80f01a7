//! `cargo xtask test`: installs what the tests need on a fresh machine, then runs them.

use std::process::Command;

use anyhow::{Context, bail};
use testkit::which;

use crate::harness::cargo;

/// Programs the tests start, and the Debian package that provides each.
const NEEDED: &[(&str, &str)] = &[
    // systemd's own socket activation tool drives the socket-activation tests.
    ("systemd-socket-activate", "systemd"),
    // A child process not written with the library is a python3 script.
    ("python3", "python3"),
    // An RSA key in PKCS#1 form for the TLS tests (ring cannot generate RSA keys).
    ("openssl", "openssl"),
];

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Passed to `cargo test` (`-p gracenet`, `--release`, ...)
    #[arg(allow_hyphen_values = true, value_name = "ARGS")]
    cargo: Vec<String>,
    /// Passed to the test binaries, after `--` (`-- --nocapture`)
    #[arg(last = true, value_name = "TEST_ARGS")]
    tests: Vec<String>,
}

impl Args {
    /// The arguments for `cargo test`, as given: `--` before the test binaries' own.
    fn passed(&self) -> Vec<&str> {
        let mut args: Vec<&str> = self.cargo.iter().map(String::as_str).collect();
        if !self.tests.is_empty() {
            args.push("--");
            args.extend(self.tests.iter().map(String::as_str));
        }
        args
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    install_missing()?;
    let mut test = cargo::command(&["test", "--workspace", "--locked"])?;
    test.args(args.passed());
    let status = test
        .status()
        .with_context(|| format!("running {}", cargo::describe(&test)))?;
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
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = if nix::unistd::geteuid().is_root() {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_argument_to_cargo_test_as_given() {
        for line in [
            "-p gracenet",
            "-- --nocapture",
            "-p gracenet -- --nocapture --test-threads 1",
            "--release --no-fail-fast",
            "",
        ] {
            let args: Args = crate::cli::parse(line).unwrap();
            assert_eq!(args.passed(), line.split_whitespace().collect::<Vec<_>>());
        }
    }
}
