//! Finding the executable to start on an upgrade.

use std::env;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Resolves `argv0` the way a shell did when it started us: a name with a `/` is a path
/// (relative ones against `cwd`), a bare name is looked up in `PATH`.
///
/// The result is deliberately not canonicalised, and `/proc/self/exe` is not used: after a
/// deploy that swapped a symlink or renamed a new binary over the old path, executing the
/// same *path* starts the new version, while `/proc/self/exe` still names the old inode.
pub(crate) fn resolve(
    argv0: &OsStr,
    cwd: &Path,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, String> {
    if argv0.is_empty() {
        return Err("argv[0] is empty".into());
    }
    if argv0.as_bytes().contains(&b'/') {
        return Ok(cwd.join(argv0));
    }
    let Some(path_var) = path_var else {
        return Err("not found: PATH is not set".into());
    };
    for dir in env::split_paths(path_var) {
        // An empty PATH entry means the current directory.
        let candidate = cwd.join(dir).join(argv0);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err("not found in PATH".into())
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_path_lookup() {
        let cwd = Path::new("/srv");
        assert_eq!(
            resolve(OsStr::new("./bin/app"), cwd, None).unwrap(),
            Path::new("/srv/./bin/app")
        );
        assert_eq!(
            resolve(OsStr::new("/usr/bin/app"), cwd, None).unwrap(),
            Path::new("/usr/bin/app")
        );
        assert_eq!(
            resolve(OsStr::new("sh"), cwd, Some(OsStr::new("/nonexistent:/bin"))).unwrap(),
            Path::new("/bin/sh")
        );
        assert!(
            resolve(
                OsStr::new("no-such-program-here"),
                cwd,
                Some(OsStr::new("/bin"))
            )
            .is_err()
        );
        assert!(resolve(OsStr::new(""), cwd, Some(OsStr::new("/bin"))).is_err());
    }
}
