//! Finding a program on `PATH`.

use std::path::PathBuf;

/// The first file named `program` in a directory of `PATH`.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_and_not_a_made_up_one() {
        assert!(which("sh").is_some_and(|p| p.is_absolute() || p.exists()));
        assert!(which("no-such-program-grace-rs").is_none());
    }
}
