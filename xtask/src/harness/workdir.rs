//! Working directories: where a run's logs, reports, certificates and scripts go. They live in
//! the target directory and outlast the run, so that the logs can be read after a failure.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `<target>/<name>`, beside the profile directory that `binary` was built into; created if
/// missing.
pub(crate) fn beside_build(binary: &Path, name: &str) -> Result<PathBuf> {
    let dir = binary
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} has no target directory", binary.display()))?
        .join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `dir` empty: removed with whatever an earlier run left in it, then created.
pub(crate) fn fresh(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", dir.display()));
        }
        _ => {}
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
