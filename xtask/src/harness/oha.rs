//! oha, the load generator: installing the pinned release into `<repo>/.tools/`, and the JSON
//! report it writes (`--output-format json`), read into typed structs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::cargo;

/// The oha release the harness installs and whose JSON it reads.
pub(crate) const VERSION: &str = "1.16.0";

/// The oha to run: `$OHA` when set, else `<repo>/.tools/bin/oha`, installed there with
/// `cargo install --locked` when missing or another version.
pub(crate) fn ensure() -> Result<PathBuf> {
    if let Some(oha) = std::env::var_os("OHA") {
        return Ok(PathBuf::from(oha));
    }
    let tools = cargo::workspace_root()?.join(".tools");
    let oha = tools.join("bin").join("oha");
    if version_of(&oha).is_some_and(|v| v.contains(VERSION)) {
        return Ok(oha);
    }
    eprintln!(
        "xtask: installing oha {VERSION} into {} (cargo install --locked; a few minutes)",
        tools.display()
    );
    let started = Instant::now();
    let mut install = cargo::command(&["install", "--locked", "oha", "--version", VERSION])?;
    install.arg("--root").arg(&tools);
    let status = install
        .status()
        .with_context(|| format!("running {}", cargo::describe(&install)))?;
    if !status.success() {
        bail!("{} failed ({status})", cargo::describe(&install));
    }
    eprintln!(
        "xtask: installed oha in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if version_of(&oha).is_none() {
        bail!("{} does not run after installing it", oha.display());
    }
    Ok(oha)
}

fn version_of(oha: &Path) -> Option<String> {
    let out = Command::new(oha).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// oha's JSON report, the parts the harness reads. A part oha leaves out reads as empty.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Report {
    pub(crate) summary: Summary,
    pub(crate) latency_percentiles: Percentiles,
    /// Responses by status code.
    pub(crate) status_code_distribution: BTreeMap<u16, u64>,
    /// Failed requests by error message.
    pub(crate) error_distribution: BTreeMap<String, u64>,
}

/// Times in seconds; `None` where oha has no figure (no request answered).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Summary {
    pub(crate) slowest: Option<f64>,
    pub(crate) requests_per_sec: Option<f64>,
}

/// Latency percentiles in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Percentiles {
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    #[serde(rename = "p99.9")]
    pub(crate) p999: Option<f64>,
}

impl Report {
    pub(crate) fn read(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading oha's report {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("oha's report {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_oha_writes() {
        let text = r#"{"summary": {"successRate": 1.0, "slowest": null, "total": 2.5e-3,
            "requestsPerSec": 4e3}, "latencyPercentiles": {"p50": 1.5e-3, "p99.9": null},
            "statusCodeDistribution": {"200": 20000, "503": 1},
            "errorDistribution": {"a \"b\" \u00e9": 3}, "list": [1, -2, true, false, []],
            "empty": {}}"#;
        let r: Report = serde_json::from_str(text).unwrap();
        assert_eq!(r.summary.slowest, None);
        assert_eq!(r.summary.requests_per_sec, Some(4000.0));
        assert_eq!(
            (r.latency_percentiles.p50, r.latency_percentiles.p999),
            (Some(0.0015), None)
        );
        assert_eq!(r.status_code_distribution.get(&200), Some(&20000));
        assert_eq!(r.error_distribution.get("a \"b\" é"), Some(&3));
        let parts_left_out: Report = serde_json::from_str("{}").unwrap();
        assert!(parts_left_out.status_code_distribution.is_empty());
        for broken in ["{\"summary\": }", "[1, 2", "1 2", &"[".repeat(200)] {
            assert!(serde_json::from_str::<Report>(broken).is_err(), "{broken}");
        }
    }
}
