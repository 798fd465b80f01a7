//! What a run against gracedemo needs before its first server, and where its files go.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{cargo, interrupt, oha};

/// gracedemo built, a working directory, oha.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) gracedemo: PathBuf,
    /// `<target>/<work>`: logs, reports, certificates.
    pub(crate) dir: PathBuf,
    pub(crate) oha: PathBuf,
}

/// Turns Ctrl-C into a flag (before any thread starts), makes the harness the subreaper of
/// what it starts, builds gracedemo in release, creates `<target>/<work>`, and installs oha
/// when missing.
pub(crate) fn prepare(work: &str) -> Result<Prepared> {
    interrupt::install()?;
    // Every generation after the first is the child of a process that exits: ours to reap.
    testkit::process::become_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    let gracedemo = cargo::build_release("gracedemo")?;
    let dir = beside_build(&gracedemo, work)?;
    let oha = oha::ensure()?;
    interrupt::check()?;
    Ok(Prepared {
        gracedemo,
        dir,
        oha,
    })
}

/// `<target>/<name>`, beside the profile directory that `binary` was built into, created if
/// missing. It outlasts the run, so that the logs can be read after a failure.
fn beside_build(binary: &Path, name: &str) -> Result<PathBuf> {
    let dir = binary
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} has no target directory", binary.display()))?
        .join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
