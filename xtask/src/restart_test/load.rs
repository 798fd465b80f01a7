//! Load from oha: installing it, running it at a fixed rate, and reading its JSON report into
//! requests by outcome and latency percentiles.
//!
//! oha runs with `-q RATE --latency-correction`: a fixed arrival rate, latency measured from
//! when each request was due rather than when it was sent, so a stall during a restart shows in
//! the percentiles instead of being hidden by coordinated omission. `-n` fixes the number of
//! requests, so that every one of them is accounted for in the report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::json::Json;
use super::proc;
use super::report::{Latency, Outcomes};

/// The oha release the harness installs and whose JSON it reads.
pub(crate) const OHA_VERSION: &str = "1.16.0";

/// The oha to run: `$OHA` when set, else `<repo>/.tools/bin/oha`, installed there with
/// `cargo install --locked` when missing or another version.
pub(crate) fn ensure_oha(root: &Path) -> Result<PathBuf> {
    if let Some(oha) = std::env::var_os("OHA") {
        return Ok(PathBuf::from(oha));
    }
    let tools = root.join(".tools");
    let oha = tools.join("bin").join("oha");
    if version_of(&oha).is_some_and(|v| v.contains(OHA_VERSION)) {
        return Ok(oha);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "xtask: installing oha {OHA_VERSION} into {} (cargo install --locked; a few minutes)",
        tools.display()
    );
    let started = Instant::now();
    let status = Command::new(&cargo)
        .args([
            "install",
            "--locked",
            "oha",
            "--version",
            OHA_VERSION,
            "--root",
        ])
        .arg(&tools)
        .status()
        .with_context(|| format!("running {} install", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("cargo install --locked oha --version {OHA_VERSION} failed ({status})");
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

/// How oha talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Proto {
    /// HTTP/1.1, connections kept alive.
    KeepAlive,
    /// HTTP/1.1, a new connection per request (`--disable-keepalive`).
    Close,
    /// HTTP/2: h2c with prior knowledge on plain ports, h2 through ALPN with TLS.
    H2,
}

/// One kind of load: the protocol and whether over TLS. The rate is calibrated per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Kind {
    pub(crate) proto: Proto,
    pub(crate) tls: bool,
}

impl Kind {
    pub(crate) const KEEPALIVE: Kind = Kind {
        proto: Proto::KeepAlive,
        tls: false,
    };

    pub(crate) fn name(self) -> &'static str {
        match (self.proto, self.tls) {
            (Proto::KeepAlive, false) => "http/1.1 keep-alive",
            (Proto::Close, false) => "http/1.1 new connection per request",
            (Proto::H2, false) => "h2c",
            (Proto::KeepAlive, true) => "tls http/1.1 keep-alive",
            (Proto::Close, true) => "tls http/1.1 new connection per request",
            (Proto::H2, true) => "tls h2",
        }
    }

    /// Connections (and HTTP/2 streams per connection).
    pub(crate) fn conns(self) -> (u32, u32) {
        match self.proto {
            Proto::KeepAlive => (32, 1),
            Proto::Close => (16, 1),
            Proto::H2 => (8, 4),
        }
    }
}

/// A load to run.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) kind: Kind,
    pub(crate) url: String,
    /// Requests per second; `None`: as fast as oha can.
    pub(crate) rate: Option<u64>,
    pub(crate) requests: u64,
    pub(crate) ca: Option<PathBuf>,
}

/// oha running in the background.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    out: PathBuf,
    log: PathBuf,
    load: Load,
    deadline: Instant,
}

/// Starts oha; its report goes to `out` (JSON), its messages to `log`.
pub(crate) fn start(oha: &Path, load: &Load, out: &Path, log: &Path) -> Result<Running> {
    let (conns, streams) = load.kind.conns();
    let mut cmd = Command::new(oha);
    cmd.args(["--no-tui", "--output-format", "json", "-o"])
        .arg(out)
        .args(["-n", &load.requests.to_string()])
        .args(["-c", &conns.to_string()])
        // A request that takes this long is lost, not slow: gracedemo answers in microseconds.
        .args(["-t", "10s"]);
    if let Some(rate) = load.rate {
        cmd.args(["-q", &rate.to_string(), "--latency-correction"]);
    }
    match load.kind.proto {
        Proto::KeepAlive => {}
        Proto::Close => {
            cmd.arg("--disable-keepalive");
        }
        Proto::H2 => {
            cmd.args(["--http2", "-p", &streams.to_string()]);
        }
    }
    if let Some(ca) = &load.ca {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.arg(&load.url);
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", oha.display()))?;
    // The longest this may take: the planned time three times over, plus oha's request timeout.
    let planned = load.rate.map_or(Duration::from_secs(60), |r| {
        Duration::from_secs_f64(load.requests as f64 / r.max(1) as f64)
    });
    Ok(Running {
        child,
        out: out.to_owned(),
        log: log.to_owned(),
        load: load.clone(),
        deadline: Instant::now() + planned * 3 + Duration::from_secs(30),
    })
}

impl Running {
    /// Waits for oha to finish (killing it past its deadline or on Ctrl-C) and reads its report.
    pub(crate) fn finish(mut self) -> Result<LoadResult> {
        let status = loop {
            if let Some(status) = self.child.try_wait().context("waiting for oha")? {
                break status;
            }
            if Instant::now() >= self.deadline || proc::interrupted() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                proc::check_interrupted()?;
                bail!("oha did not finish in time (see {})", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("oha failed ({status}): {}", log.trim());
        }
        let text = std::fs::read_to_string(&self.out)
            .with_context(|| format!("reading oha's report {}", self.out.display()))?;
        let json = Json::parse(&text)
            .map_err(|e| anyhow::anyhow!("oha's report {}: {e}", self.out.display()))?;
        Ok(LoadResult::from_oha(&json, &self.load))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Finished already (reaped by `finish`), or abandoned on an error: never left behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What oha reported.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadResult {
    pub(crate) kind: Option<Kind>,
    pub(crate) rate: Option<u64>,
    pub(crate) requested: u64,
    pub(crate) outcomes: Outcomes,
    /// Error messages as oha gave them, with their counts.
    pub(crate) errors: Vec<(String, u64)>,
    pub(crate) latency: Latency,
    pub(crate) rps: f64,
}

impl LoadResult {
    fn from_oha(json: &Json, load: &Load) -> LoadResult {
        let mut outcomes = Outcomes::default();
        if let Some(codes) = json.get("statusCodeDistribution") {
            for (code, n) in codes.entries() {
                let n = n.as_f64().unwrap_or(0.0) as u64;
                match code.parse::<u16>() {
                    Ok(200..=299) => outcomes.ok += n,
                    _ => outcomes.non2xx += n,
                }
            }
        }
        let mut errors = Vec::new();
        if let Some(dist) = json.get("errorDistribution") {
            for (message, n) in dist.entries() {
                let n = n.as_f64().unwrap_or(0.0) as u64;
                // hyper's `Http2` error, which oha shows without its cause: on an HTTP/2 load,
                // a stream the server refused in its final GOAWAY (see
                // `scenarios::finish_loads`).
                let bucket = if load.kind.proto == Proto::H2 && message == "http2 error" {
                    "goaway"
                } else {
                    classify(message)
                };
                *outcomes.bucket(bucket) += n;
                errors.push((message.clone(), n));
            }
        }
        let p = |key: &str| {
            json.get("latencyPercentiles")
                .and_then(|l| l.get(key))
                .and_then(Json::as_f64)
                .map(|s| s * 1000.0)
        };
        let max = json
            .get("summary")
            .and_then(|s| s.get("slowest"))
            .and_then(Json::as_f64)
            .map(|s| s * 1000.0);
        let rps = json
            .get("summary")
            .and_then(|s| s.get("requestsPerSec"))
            .and_then(Json::as_f64)
            .unwrap_or(0.0);
        LoadResult {
            kind: Some(load.kind),
            rate: load.rate,
            requested: load.requests,
            outcomes,
            errors,
            latency: Latency {
                p50: p("p50"),
                p99: p("p99"),
                p999: p("p99.9"),
                max,
            },
            rps,
        }
    }

    /// Requests oha neither answered nor counted as an error (should be none).
    pub(crate) fn unaccounted(&self) -> u64 {
        self.requested.saturating_sub(self.outcomes.total())
    }
}

/// The outcome bucket of one of oha's error messages (hyper, rustls and io errors).
pub(crate) fn classify(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("refused") {
        "refused"
    } else if m.contains("reset") || m.contains("broken pipe") {
        "reset"
    } else if m.contains("timeout") || m.contains("timed out") || m.contains("deadline") {
        "timeout"
    } else if m.contains("certificate")
        || m.contains("tls")
        || m.contains("handshake")
        || m.contains("rustls")
        || m.contains("alert")
    {
        "tls"
    } else if m.contains("closed") || m.contains("incomplete") || m.contains("eof") {
        "closed"
    } else if m.contains("canceled") {
        // hyper's `Canceled`: "a pending item was dropped before ever being processed".
        "goaway"
    } else {
        "other"
    }
}

/// What the machine can do for one kind of load against `url`: an unthrottled burst of
/// `secs` seconds; requests per second.
pub(crate) fn capacity(
    oha: &Path,
    kind: Kind,
    url: &str,
    ca: Option<&Path>,
    work: &Path,
    secs: f64,
) -> Result<f64> {
    // A burst with a count rather than `-z`: oha's `-z` aborts requests in flight at the end.
    // First a short probe to size the burst, then the burst itself.
    let mut requests = 2_000;
    let mut rps = 0.0;
    for _ in 0..2 {
        let load = Load {
            kind,
            url: url.to_owned(),
            rate: None,
            requests,
            ca: ca.map(Path::to_path_buf),
        };
        let out = work.join("capacity.json");
        let log = work.join("capacity.log");
        let result = start(oha, &load, &out, &log)?.finish()?;
        if result.outcomes.ok != requests {
            bail!(
                "measuring the capacity for {}: {} of {requests} requests failed ({})",
                kind.name(),
                requests - result.outcomes.ok,
                result.outcomes.describe()
            );
        }
        rps = result.rps;
        requests = ((rps * secs) as u64).clamp(1_000, 2_000_000);
    }
    Ok(rps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_oha_errors() {
        assert_eq!(classify("Connection refused (os error 111)"), "refused");
        assert_eq!(classify("Connection reset by peer (os error 104)"), "reset");
        assert_eq!(
            classify("connection closed before message completed"),
            "closed"
        );
        assert_eq!(classify("Timeout"), "timeout");
        assert_eq!(classify("operation was canceled"), "goaway");
        assert_eq!(classify("invalid peer certificate: UnknownIssuer"), "tls");
        assert_eq!(classify("something new"), "other");
    }

    #[test]
    fn reads_an_oha_report() {
        let json = Json::parse(
            r#"{"summary": {"slowest": 0.5, "requestsPerSec": 10.0},
                "latencyPercentiles": {"p50": 0.001, "p99": 0.002, "p99.9": 0.003},
                "statusCodeDistribution": {"200": 90, "503": 2},
                "errorDistribution": {"Connection refused (os error 111)": 3}}"#,
        )
        .unwrap();
        let load = Load {
            kind: Kind::KEEPALIVE,
            url: "http://127.0.0.1:1/".into(),
            rate: Some(10),
            requests: 100,
            ca: None,
        };
        let r = LoadResult::from_oha(&json, &load);
        assert_eq!(
            (r.outcomes.ok, r.outcomes.non2xx, r.outcomes.refused),
            (90, 2, 3)
        );
        assert_eq!(r.unaccounted(), 5);
        assert_eq!(r.latency.p50, Some(1.0));
        assert_eq!(r.latency.max, Some(500.0));
    }
}
