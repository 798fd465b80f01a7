//! BENCHMARKS.md: each benchmark owns one section between its own HTML comment markers and
//! rewrites only that; and the machine and date every section states.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

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
    write_atomically(&path, &new)?;
    Ok(path)
}

/// What the numbers were measured on.
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu: String,
    pub(crate) kernel: String,
}

impl Machine {
    pub(crate) fn detect() -> Self {
        let nproc = std::thread::available_parallelism().map_or(1, usize::from);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .filter_map(|line| line.split_once(':'))
                    .find(|(key, _)| key.trim() == "model name")
                    .map(|(_, value)| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let kernel = format!(
            "{} {release} ({})",
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        Machine { nproc, cpu, kernel }
    }
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

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// Today's date in UTC as YYYY-MM-DD.
pub(crate) fn today_utc() -> String {
    civil_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// A Unix time as a UTC date, YYYY-MM-DD, without a date crate (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(secs_since_epoch: u64) -> String {
    let secs = secs_since_epoch;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_by_markers() {
        let (b, e) = ("<!-- a:begin -->", "<!-- a:end -->");
        let section = format!("{b}\nnew\n{e}\n");
        let old =
            format!("# Benchmarks\n\n{b}\nold\n{e}\n\n<!-- z:begin -->\nkeep\n<!-- z:end -->\n");
        let new = splice(Some(&old), b, e, &section).unwrap();
        assert!(new.contains("new") && !new.contains("old") && new.contains("keep"));
        assert!(
            splice(None, b, e, &section)
                .unwrap()
                .starts_with("# Benchmarks")
        );
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_735_689_599), "2024-12-31");
    }
}
