//! The pid file, replaced atomically so that a reader never sees it empty or half written.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, sys};

/// Writes `pid` followed by a newline to `path` through a temporary file in the same
/// directory and a rename, so the file always holds one whole pid: the old one or the new one.
pub(crate) fn write(path: &Path, pid: u32) -> Result<(), Error> {
    Prepared::new(path, pid)?.commit().map(drop)
}

/// A pid file written to its temporary name, to be renamed into place later. Dropped
/// uncommitted, the temporary file is removed.
///
/// Prepared [`ahead`](Prepared::ahead), the slow part is done while the new process starts and
/// only a quick rename is left for the moment it commits, which is on the path from the new
/// process's readiness to the old one's stopping to accept. A rename over an existing file is
/// slow on some filesystems: ext4 first writes out the new file's delayed blocks, then frees
/// the replaced file's inode (tmpfs, where `/run` usually lives, does neither). Both are moved
/// off the path: writeback of the new file is started when it is written, and the file to be
/// replaced is held (an `O_PATH` descriptor: nothing is read, and it cannot block), so the
/// rename only unlinks it, and its inode is freed when the holder is dropped. ARCHITECTURE.md
/// has the figures.
#[derive(Debug)]
pub(crate) struct Prepared {
    path: PathBuf,
    tmp: Option<PathBuf>,
    /// The file the rename replaces, if there is one and it was prepared ahead.
    replaced: Option<fs::File>,
}

impl Prepared {
    /// For a rename right after.
    pub(crate) fn new(path: &Path, pid: u32) -> Result<Prepared, Error> {
        Prepared::write(path, pid, false)
    }

    /// For a rename later that must be quick (see [`Prepared`]).
    pub(crate) fn ahead(path: &Path, pid: u32) -> Result<Prepared, Error> {
        Prepared::write(path, pid, true)
    }

    fn write(path: &Path, pid: u32, ahead: bool) -> Result<Prepared, Error> {
        let err = |source| Error::PidFile {
            path: path.to_owned(),
            source,
        };
        let tmp = temp_path(path, pid).map_err(err)?;
        let mut prepared = Prepared {
            path: path.to_owned(),
            tmp: Some(tmp.clone()),
            replaced: None,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(err)?;
        // No fsync: the rename alone makes the change atomic for readers, and a pid file has
        // nothing to preserve across a crash.
        writeln!(f, "{pid}").map_err(err)?;
        if ahead {
            // Only started, not waited for.
            sys::start_writeback(&f);
            // Whatever is there now, a symbolic link itself rather than its target (nothing
            // there: nothing to hold).
            prepared.replaced = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
                .open(path)
                .ok();
        }
        Ok(prepared)
    }

    /// Renames the file into place. The file it replaced, if held (prepared ahead), is
    /// returned still open: its inode is freed when that is dropped, once time matters less.
    pub(crate) fn commit(mut self) -> Result<Option<fs::File>, Error> {
        let replaced = self.replaced.take();
        let Some(tmp) = self.tmp.take() else {
            return Ok(replaced);
        };
        match fs::rename(&tmp, &self.path) {
            Ok(()) => Ok(replaced),
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                Err(Error::PidFile {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// The pid the file names, or `None` when there is no file or it holds no pid.
pub(crate) fn read(path: &Path) -> io::Result<Option<u32>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the pid file if it still names `pid` (a newer process may have replaced it).
pub(crate) fn remove(path: &Path, pid: u32) -> Result<(), Error> {
    let err = |source| Error::PidFile {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(s) if s.trim() == pid.to_string() => fs::remove_file(path).map_err(err),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// `.NAME.WRITER.PID.tmp` beside the pid file: named by the process writing it as well as the
/// pid written, so that a parent preparing its successor's file and the successor claiming it
/// never write the same temporary file.
fn temp_path(path: &Path, pid: u32) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the pid file path has no file name",
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{pid}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn replaces_the_file_whole_and_removes_only_its_own_pid() {
        let dir = std::env::temp_dir().join(format!("gracenet-pidfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.pid");
        write(&path, 41).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "41\n");
        write(&path, 42).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "42\n");
        // Nothing but the pid file is left: the temporary file was renamed over it.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        // A file prepared ahead holds the one it will replace: after the rename, the old file
        // is still open, unlinked (its inode not freed), until the commit's result is dropped.
        let old_inode = fs::metadata(&path).unwrap().ino();
        let prepared = Prepared::ahead(&path, 43).unwrap();
        let replaced = prepared.commit().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "43\n");
        let held = replaced.as_ref().unwrap().metadata().unwrap();
        assert_eq!((held.ino(), held.nlink()), (old_inode, 0));
        drop(replaced);
        // One prepared for a rename at once holds nothing.
        let replaced = Prepared::new(&path, 42).unwrap().commit().unwrap();
        assert!(replaced.is_none());
        assert_eq!(fs::read_to_string(&path).unwrap(), "42\n");
        remove(&path, 41).unwrap();
        assert!(path.exists(), "another process's pid file was removed");
        remove(&path, 42).unwrap();
        assert!(!path.exists());
        remove(&path, 42).unwrap();
        match write(&dir.join("missing-dir").join("app.pid"), 1) {
            Err(Error::PidFile { path, .. }) => assert!(path.ends_with("missing-dir/app.pid")),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
