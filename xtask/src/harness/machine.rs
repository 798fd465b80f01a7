//! What a report states besides its figures: the machine it was measured on, and the date.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// What the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
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

/// Today's date in UTC as YYYY-MM-DD.
pub(crate) fn today_utc() -> String {
    date_of(SystemTime::now())
}

/// Time since the epoch in whole seconds, 0 if the clock is before it.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The UTC date of `t`, YYYY-MM-DD: the date part of its RFC 3339 form.
fn date_of(t: SystemTime) -> String {
    let mut rfc3339 = humantime::format_rfc3339_seconds(t).to_string();
    rfc3339.truncate("YYYY-MM-DD".len());
    rfc3339
}

#[cfg(test)]
impl Machine {
    /// A machine for tests of what a report says.
    pub(crate) fn fake() -> Machine {
        let (cpu, kernel) = ("test cpu".into(), "test kernel".into());
        Machine {
            nproc: 2,
            cpu,
            kernel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        let date = |secs| date_of(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_735_689_599), "2024-12-31");
    }
}
