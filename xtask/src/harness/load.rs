//! Load from oha: running it at a fixed rate and reading its report into requests by outcome
//! and latency percentiles.
//!
//! oha runs with `-q RATE --latency-correction`: a fixed arrival rate, latency measured from
//! when each request was due rather than when it was sent, so a stall during a restart shows in
//! the percentiles instead of being hidden by coordinated omission. `-n` fixes the number of
//! requests, so that every one of them is accounted for in the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::interrupt;
use super::oha::Report;
use super::outcomes::{Latency, Outcomes};

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

/// Starts oha; its report goes to `<dir>/<tag>.json`, its messages to `<dir>/<tag>.log`.
pub(crate) fn start(oha: &Path, load: &Load, dir: &Path, tag: &str) -> Result<Running> {
    let (out, log) = (
        dir.join(format!("{tag}.json")),
        dir.join(format!("{tag}.log")),
    );
    let (conns, streams) = load.kind.conns();
    let mut cmd = Command::new(oha);
    cmd.args(["--no-tui", "--output-format", "json", "-o"])
        .arg(&out)
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
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
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
        out,
        log,
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
            if Instant::now() >= self.deadline || interrupt::interrupted() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                interrupt::check()?;
                bail!("oha did not finish in time (see {})", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("oha failed ({status}): {}", log.trim());
        }
        Ok(LoadResult::from_oha(&Report::read(&self.out)?, &self.load))
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
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) latency: Latency,
    pub(crate) rps: f64,
}

impl LoadResult {
    fn from_oha(report: &Report, load: &Load) -> LoadResult {
        let mut outcomes = Outcomes::default();
        for (&code, &n) in &report.status_code_distribution {
            match code {
                200..=299 => outcomes.ok += n,
                _ => outcomes.non2xx += n,
            }
        }
        for (message, &n) in &report.error_distribution {
            // hyper's `Http2` error, which oha shows without its cause: on an HTTP/2 load,
            // a stream the server refused in its final GOAWAY (see the restart-test's
            // `scenarios::finish_loads`).
            let bucket = if load.kind.proto == Proto::H2 && message == "http2 error" {
                "goaway"
            } else {
                classify(message)
            };
            *outcomes.bucket(bucket) += n;
        }
        let ms = |secs: Option<f64>| secs.map(|s| s * 1000.0);
        let p = &report.latency_percentiles;
        LoadResult {
            kind: Some(load.kind),
            rate: load.rate,
            requested: load.requests,
            outcomes,
            errors: report.error_distribution.clone(),
            latency: Latency {
                p50: ms(p.p50),
                p99: ms(p.p99),
                p999: ms(p.p999),
                max: ms(report.summary.slowest),
            },
            rps: report.summary.requests_per_sec.unwrap_or(0.0),
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
        let result = start(oha, &load, work, "capacity")?.finish()?;
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
        let report: Report = serde_json::from_str(
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
        let r = LoadResult::from_oha(&report, &load);
        assert_eq!(
            (r.outcomes.ok, r.outcomes.non2xx, r.outcomes.refused),
            (90, 2, 3)
        );
        assert_eq!(r.unaccounted(), 5);
        assert_eq!(r.latency.p50, Some(1.0));
        assert_eq!(r.latency.max, Some(500.0));
    }
}
