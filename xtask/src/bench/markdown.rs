//! BENCHMARKS.md: each benchmark owns one section between its own HTML comment markers and
//! rewrites only that.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::harness::machine::Machine;

const HEADER: &str = "\
# Benchmarks

Measured numbers, one section per benchmark. Each section says the command that regenerates it;
that command rewrites only its own section, between its HTML comment markers.
";

/// Replaces the section between `begin` and `end` in `<root>/BENCHMARKS.md` with `section`
/// (which includes both markers), or appends it; returns the file's path.
pub(crate) fn update(root: &Path, begin: &str, end: &str, section: &str) -> Result<PathBuf> {
    let path = root.join("BENCHMARKS.md");
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = splice(old.as_deref(), begin, end, section)?;
    // Written beside it and renamed over it: never half a file.
    testkit::fs::replace_file(&path, new.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The lines that close every section: the machine (`shared` says what else ran on it) and
/// the date.
pub(crate) fn machine_and_date(machine: &Machine, date: &str, shared: &str) -> String {
    format!(
        "- Machine: nproc {}, {}, kernel {}{shared}.\n- Date: {date} (UTC).\n",
        machine.nproc, machine.cpu, machine.kernel
    )
}

/// Replaces our section in `old` (or appends it, or starts the file), leaving the rest as is.
pub(crate) fn splice(old: Option<&str>, begin: &str, end: &str, section: &str) -> Result<String> {
    let Some(old) = old else {
        return Ok(format!("{HEADER}\n{section}"));
    };
    match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => {
            let mut after = &old[e + end.len()..];
            // Our section ends with a newline already.
            if let Some(rest) = after.strip_prefix('\n') {
                after = rest;
            }
            Ok(format!("{}{section}{after}", &old[..b]))
        }
        (None, None) => {
            let separator = if old.ends_with("\n\n") || old.is_empty() {
                ""
            } else if old.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Ok(format!("{old}{separator}{section}"))
        }
        _ => bail!("BENCHMARKS.md has a broken {begin} ... {end} pair; fix it by hand"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn splices_only_our_section() {
        let (b, e) = ("<!-- a:begin -->", "<!-- a:end -->");
        let section = |text: &str| format!("{b}\n{text}\n{e}\n");
        let splice = |old, text| super::splice(old, b, e, &section(text));
        let fresh = splice(None, "old").unwrap();
        assert!(fresh.starts_with("# Benchmarks"));
        let theirs = format!("{fresh}\n<!-- z:begin -->\nkeep\n<!-- z:end -->\n");
        let updated = splice(Some(&theirs), "new").unwrap();
        assert!(updated.contains("new") && !updated.contains("old") && updated.contains("keep"));
        assert_eq!(updated.matches(b).count(), 1);
        let appended = splice(Some("# Benchmarks\n"), "x").unwrap();
        assert!(appended.starts_with(&format!("# Benchmarks\n\n{b}")));
        assert!(splice(Some(&format!("{e}\n{b}")), "x").is_err());
    }
}
