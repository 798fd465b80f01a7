//! Files the tests and their servers use: a temporary directory of their own, executable scripts,
//! a symlink pointed elsewhere or a file replaced the way a deploy does it (atomically), and pid
//! files.
//!
//! Nothing here panics: every operation returns the error it met.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory of its own under the system's temporary directory, removed with all it holds
/// when dropped, however the test ends.
///
/// Its name holds the tag, the process id and a counter, so that no two tests (of this process
/// or another) share one; it is short, because a unix socket path inside it is limited to 107
/// bytes.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `grace-TAG-PID-N` in the system's temporary directory. A leftover of an earlier
    /// process with the same pid is removed first.
    ///
    /// # Errors
    ///
    /// When the directory cannot be removed or created.
    pub fn new(tag: &str) -> io::Result<TempDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("grace-{tag}-{}-{n}", std::process::id()));
        fresh_dir(&path)?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// Writes an executable script named `name` holding `text` (its shebang included) and
    /// returns its path.
    ///
    /// # Errors
    ///
    /// When the file cannot be written or made executable.
    pub fn script(&self, name: &str, text: &str) -> io::Result<PathBuf> {
        let path = self.join(name);
        write_executable(&path, text)?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Nothing to do about a failure here: the directory is in the temporary directory.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes `dir` an empty directory: removed with whatever an earlier run left in it, then
/// created (with its parents).
///
/// # Errors
///
/// When the old directory cannot be removed or the new one created.
pub fn fresh_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(dir)
}

/// Writes `text` to `path` and makes it executable (mode 755).
///
/// # Errors
///
/// When the file cannot be written or its mode changed.
pub fn write_executable(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// Points the symlink `link` at `target`, atomically: a new link is renamed over the old one,
/// the way a deploy swaps binaries, so that nobody ever finds `link` missing.
///
/// # Errors
///
/// When the new link cannot be made or renamed into place.
pub fn point_link(link: &Path, target: &Path) -> io::Result<()> {
    let tmp = link.with_extension("new-link");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

/// Replaces `path` by a file holding `bytes`, atomically (written beside it, then renamed over
/// it), the way a deploy or certbot does: a reader sees the old file or the new one, never half.
///
/// # Errors
///
/// When the new file cannot be written or renamed into place.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The pid a pid file names; `None` while the file is missing or does not hold one number (yet).
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_dir_is_unique_and_removed_on_drop() {
        let a = TempDir::new("kit").unwrap();
        let b = TempDir::new("kit").unwrap();
        assert_ne!(a.path(), b.path());
        let script = a.script("run.sh", "#!/bin/sh\nexit 0\n").unwrap();
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
        assert!(b.path().is_dir());
    }

    #[test]
    fn links_and_files_are_replaced_and_pids_read() {
        let dir = TempDir::new("kit-files").unwrap();
        let (one, two, link) = (dir.join("one"), dir.join("two"), dir.join("link"));
        point_link(&link, &one).unwrap();
        point_link(&link, &two).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), two);

        let pid_file = dir.join("app.pid");
        assert_eq!(read_pid(&pid_file), None);
        replace_file(&pid_file, b"42\n").unwrap();
        replace_file(&pid_file, b"43\n").unwrap();
        assert_eq!(read_pid(&pid_file), Some(43));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");

        fresh_dir(&dir.join("sub/inner")).unwrap();
        std::fs::write(dir.join("sub/inner/x"), "x").unwrap();
        fresh_dir(&dir.join("sub/inner")).unwrap();
        assert_eq!(std::fs::read_dir(dir.join("sub/inner")).unwrap().count(), 0);
    }
}
