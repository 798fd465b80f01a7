//! What a run against gracedemo needs before its first server.

use std::path::PathBuf;

use anyhow::Result;

use super::{cargo, interrupt, oha, process, workdir};

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
    process::become_subreaper()?;
    let gracedemo = cargo::build_release("gracedemo")?;
    let dir = workdir::beside_build(&gracedemo, work)?;
    let oha = oha::ensure()?;
    interrupt::check()?;
    Ok(Prepared {
        gracedemo,
        dir,
        oha,
    })
}
