//! Finding a program on `PATH`, as a shell would, for the tools the tests and `cargo xtask`
//! need (systemd-socket-activate, python3, openssl, oha).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The first executable regular file named `program` in a directory of `PATH`; `None` if there
/// is none (or `PATH` is unset).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_and_not_a_made_up_one() {
        assert!(which("sh").is_some_and(|p| p.is_absolute() && p.ends_with("sh")));
        assert!(which("no-such-program-grace-rs").is_none());
    }
}
