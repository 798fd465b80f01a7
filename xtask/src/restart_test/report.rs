//! What a run found: requests by outcome, latency, one record per restart, the verdicts; as a
//! table for a person and as JSON for a program.

use std::fmt::Write as _;
use std::time::Duration;

use super::h2load::H2Stats;
use super::json::Json;
use super::load::LoadResult;

/// Requests by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outcomes {
    pub(crate) ok: u64,
    pub(crate) non2xx: u64,
    pub(crate) refused: u64,
    pub(crate) reset: u64,
    pub(crate) timeout: u64,
    pub(crate) tls: u64,
    /// The connection closed before a complete response.
    pub(crate) closed: u64,
    /// HTTP/2 requests oha issued on a connection the server had sent GOAWAY on: canceled by
    /// the client unsent, or refused by the final GOAWAY (see `scenarios::finish_loads`).
    pub(crate) goaway: u64,
    pub(crate) other: u64,
}

impl Outcomes {
    const NAMES: [&'static str; 9] = [
        "ok", "non2xx", "refused", "reset", "timeout", "tls", "closed", "goaway", "other",
    ];

    fn values(&self) -> [u64; 9] {
        [
            self.ok,
            self.non2xx,
            self.refused,
            self.reset,
            self.timeout,
            self.tls,
            self.closed,
            self.goaway,
            self.other,
        ]
    }

    /// The counter for an outcome named as in [`load::classify`](super::load::classify)
    /// (`other` for an unknown name).
    pub(crate) fn bucket(&mut self, name: &str) -> &mut u64 {
        match name {
            "ok" => &mut self.ok,
            "non2xx" => &mut self.non2xx,
            "refused" => &mut self.refused,
            "reset" => &mut self.reset,
            "timeout" => &mut self.timeout,
            "tls" => &mut self.tls,
            "closed" | "partial" => &mut self.closed,
            "goaway" => &mut self.goaway,
            _ => &mut self.other,
        }
    }

    pub(crate) fn add(&mut self, o: &Outcomes) {
        self.ok += o.ok;
        self.non2xx += o.non2xx;
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.tls += o.tls;
        self.closed += o.closed;
        self.goaway += o.goaway;
        self.other += o.other;
    }

    pub(crate) fn total(&self) -> u64 {
        self.values().iter().sum()
    }

    /// Everything but `ok`.
    pub(crate) fn failed(&self) -> u64 {
        self.total() - self.ok
    }

    /// "ok 10, refused 2": the non-zero counters.
    pub(crate) fn describe(&self) -> String {
        let parts: Vec<String> = Self::NAMES
            .iter()
            .zip(self.values())
            .filter(|&(_, n)| n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }

    pub(crate) fn to_json(self) -> Json {
        Json::obj(
            Self::NAMES
                .iter()
                .zip(self.values())
                .map(|(k, v)| (*k, v.into())),
        )
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Latency {
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) p999: Option<f64>,
    pub(crate) max: Option<f64>,
}

impl Latency {
    /// The worse of two, percentile by percentile (for two loads run side by side).
    pub(crate) fn worst(self, o: Latency) -> Latency {
        let w = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Latency {
            p50: w(self.p50, o.p50),
            p99: w(self.p99, o.p99),
            p999: w(self.p999, o.p999),
            max: w(self.max, o.max),
        }
    }

    pub(crate) fn to_json(self) -> Json {
        Json::obj([
            ("p50", self.p50.into()),
            ("p99", self.p99.into()),
            ("p99_9", self.p999.into()),
            ("max", self.max.into()),
        ])
    }
}

/// One restart, as seen from outside.
#[derive(Debug, Clone, Default)]
pub(crate) struct RestartRecord {
    pub(crate) old_pid: u32,
    pub(crate) new_pid: Option<u32>,
    /// The new process's `gracehttp_generation`.
    pub(crate) generation: Option<u64>,
    /// Signals sent in this restart (more than one: `double-signal`).
    pub(crate) signals: u32,
    /// From the signal to the first answer from the new pid.
    pub(crate) to_new: Option<Duration>,
    /// From the signal to the old pid's exit.
    pub(crate) to_old_exit: Option<Duration>,
    /// The most server processes alive at once from this signal to the next.
    pub(crate) generations: usize,
    /// Descriptors of the old generation just before its signal: all, and without TCP
    /// connections ("base").
    pub(crate) fds: Option<usize>,
    pub(crate) fds_base: Option<usize>,
    /// Its resident memory then, KiB.
    pub(crate) rss_kib: Option<u64>,
    /// Zombie children of a server seen by then.
    pub(crate) zombies: usize,
    /// The slowest probe request inside the restart window.
    pub(crate) probe_max: Option<Duration>,
    pub(crate) probes: u64,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

impl RestartRecord {
    fn to_json(&self) -> Json {
        Json::obj([
            ("old_pid", self.old_pid.into()),
            ("new_pid", self.new_pid.into()),
            ("generation", self.generation.into()),
            ("signals", self.signals.into()),
            ("to_new_pid_ms", ms(self.to_new).into()),
            ("to_old_exit_ms", ms(self.to_old_exit).into()),
            ("live_generations_max", self.generations.into()),
            ("old_fds", self.fds.into()),
            ("old_fds_without_connections", self.fds_base.into()),
            ("old_rss_kib", self.rss_kib.into()),
            ("zombies", self.zombies.into()),
            ("probe_max_ms", ms(self.probe_max).into()),
            ("probes", self.probes.into()),
        ])
    }
}

/// One scenario's results and verdict.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScenarioResult {
    pub(crate) name: &'static str,
    pub(crate) duration: Duration,
    /// oha's runs.
    pub(crate) loads: Vec<LoadResult>,
    /// The in-tree clients' requests (slow requests, idle reuse, probes, the HTTP/2 client).
    pub(crate) clients: Outcomes,
    /// The in-tree HTTP/2 client's figures, one per HTTP/2 load (also in `clients`).
    pub(crate) h2_clients: Vec<H2Stats>,
    pub(crate) restarts: Vec<RestartRecord>,
    pub(crate) max_generations: usize,
    pub(crate) zombies: Vec<u32>,
    /// Requests that failed by design rather than by fault, so not lost: refusals after a
    /// final stop, and oha's HTTP/2 requests caught by a GOAWAY (at most one per oha worker
    /// per restart).
    pub(crate) excused: u64,
    /// Why it failed; empty when it passed.
    pub(crate) failures: Vec<String>,
    /// What a person should know besides.
    pub(crate) notes: Vec<String>,
    /// Scenario-specific numbers for the JSON.
    pub(crate) extra: Vec<(String, Json)>,
    /// The server's log.
    pub(crate) log: Option<String>,
}

impl ScenarioResult {
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub(crate) fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    pub(crate) fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }

    /// oha's and the in-tree clients' requests together.
    pub(crate) fn outcomes(&self) -> Outcomes {
        let mut all = self.clients;
        for l in &self.loads {
            all.add(&l.outcomes);
        }
        all
    }

    pub(crate) fn latency(&self) -> Latency {
        self.loads
            .iter()
            .map(|l| l.latency)
            .reduce(Latency::worst)
            .unwrap_or_default()
    }

    /// In-tree HTTP/2 client requests answered after a retry RFC 9113 allows (never sent, or
    /// refused unprocessed); each counts once among the requests.
    pub(crate) fn retried(&self) -> u64 {
        self.h2_clients.iter().map(|c| c.retried).sum()
    }

    /// The slowest probe request inside any restart window.
    pub(crate) fn window_max(&self) -> Option<Duration> {
        self.restarts.iter().filter_map(|r| r.probe_max).max()
    }

    fn to_json(&self) -> Json {
        let loads: Vec<Json> = self
            .loads
            .iter()
            .map(|l| {
                Json::obj([
                    ("kind", l.kind.map(|k| k.name()).into()),
                    ("rate", l.rate.into()),
                    ("requested", l.requested.into()),
                    ("outcomes", l.outcomes.to_json()),
                    ("unaccounted", l.unaccounted().into()),
                    (
                        "errors",
                        Json::obj(l.errors.iter().map(|(m, n)| (m.clone(), Json::from(*n)))),
                    ),
                    ("latency_ms", l.latency.to_json()),
                    ("requests_per_sec", l.rps.into()),
                ])
            })
            .collect();
        Json::obj([
            ("name", self.name.into()),
            ("passed", self.passed().into()),
            ("failures", self.failures.clone().into()),
            ("notes", self.notes.clone().into()),
            ("duration_s", self.duration.as_secs_f64().into()),
            ("outcomes", self.outcomes().to_json()),
            (
                "lost",
                self.outcomes().failed().saturating_sub(self.excused).into(),
            ),
            ("excused", self.excused.into()),
            ("retried", self.retried().into()),
            ("client_outcomes", self.clients.to_json()),
            (
                "h2_clients",
                Json::Arr(self.h2_clients.iter().map(H2Stats::to_json).collect()),
            ),
            ("latency_ms", self.latency().to_json()),
            (
                "restart_window_max_latency_ms",
                ms(self.window_max()).into(),
            ),
            ("live_generations_max", self.max_generations.into()),
            ("zombies", self.zombies.clone().into()),
            ("loads", Json::Arr(loads)),
            (
                "restarts",
                Json::Arr(self.restarts.iter().map(RestartRecord::to_json).collect()),
            ),
            ("details", Json::Obj(self.extra.clone())),
            ("server_log", self.log.clone().into()),
        ])
    }
}

/// The whole run as JSON.
pub(crate) fn to_json(results: &[ScenarioResult], header: Vec<(String, Json)>) -> Json {
    let mut pairs = header;
    pairs.push((
        "passed".into(),
        results.iter().all(ScenarioResult::passed).into(),
    ));
    pairs.push((
        "scenarios".into(),
        Json::Arr(results.iter().map(ScenarioResult::to_json).collect()),
    ));
    Json::Obj(pairs)
}

fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn median_max(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    let max = v[v.len() - 1];
    format!("{median:.1} / {max:.1}")
}

fn first_last<T: Copy>(v: impl IntoIterator<Item = T>, show: impl Fn(T) -> String) -> String {
    let v: Vec<T> = v.into_iter().collect();
    match (v.first(), v.last()) {
        (Some(&a), Some(&b)) if v.len() > 1 => format!("{} -> {}", show(a), show(b)),
        (Some(&a), _) => show(a),
        _ => "-".to_owned(),
    }
}

/// Left-aligned first column, the others right-aligned, each as wide as its widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                let _ = write!(line, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

/// The tables a person reads: requests and latency, then restarts, then what failed.
pub(crate) fn render(results: &[ScenarioResult]) -> String {
    let mut requests = vec![
        [
            "scenario",
            "verdict",
            "requests",
            "lost",
            "excused",
            "retried",
            "non-2xx",
            "refused",
            "reset",
            "timeout",
            "tls",
            "closed",
            "goaway",
            "other",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "window max ms",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut restarts = vec![
        [
            "scenario",
            "restarts",
            "to new pid ms (med / max)",
            "old exit ms (med / max)",
            "gens",
            "fds w/o conns",
            "RSS MiB",
            "zombies",
            "seconds",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in results {
        let o = r.outcomes();
        let l = r.latency();
        requests.push(vec![
            r.name.to_owned(),
            if r.passed() { "ok" } else { "FAILED" }.to_owned(),
            o.total().to_string(),
            o.failed().saturating_sub(r.excused).to_string(),
            r.excused.to_string(),
            r.retried().to_string(),
            o.non2xx.to_string(),
            o.refused.to_string(),
            o.reset.to_string(),
            o.timeout.to_string(),
            o.tls.to_string(),
            o.closed.to_string(),
            o.goaway.to_string(),
            o.other.to_string(),
            f1(l.p50),
            f1(l.p99),
            f1(l.p999),
            f1(l.max),
            f1(ms(r.window_max())),
        ]);
        let to_new = r.restarts.iter().filter_map(|x| ms(x.to_new)).collect();
        let to_exit = r
            .restarts
            .iter()
            .filter_map(|x| ms(x.to_old_exit))
            .collect();
        restarts.push(vec![
            r.name.to_owned(),
            r.restarts.len().to_string(),
            median_max(to_new),
            median_max(to_exit),
            r.max_generations.to_string(),
            first_last(r.restarts.iter().filter_map(|x| x.fds_base), |v| {
                v.to_string()
            }),
            first_last(r.restarts.iter().filter_map(|x| x.rss_kib), |v| {
                format!("{:.1}", v as f64 / 1024.0)
            }),
            r.zombies.len().to_string(),
            format!("{:.0}", r.duration.as_secs_f64()),
        ]);
    }
    let mut out = String::new();
    out.push_str(&table(&requests));
    out.push('\n');
    out.push_str(&table(&restarts));
    let _ = writeln!(
        out,
        "\nlost: failed requests less the excused ones (refused after a final stop; oha's \
         HTTP/2 requests caught by a GOAWAY, at most one per oha worker per \
         restart). retried: requests of the in-tree HTTP/2 client answered after a retry RFC \
         9113 allows (never sent, or refused unprocessed), each counted once among the \
         requests. Latency: oha's percentiles (corrected for coordinated omission; the worst \
         of the loads run side by side); window max: the slowest in-tree probe request (a new \
         connection every few ms) between a restart signal and the old pid's exit. fds w/o \
         conns and RSS: the generation about to be replaced, first and last restart."
    );
    for r in results {
        for n in &r.notes {
            let _ = writeln!(out, "note {}: {n}", r.name);
        }
    }
    for r in results {
        for f in &r.failures {
            let _ = writeln!(out, "FAILED {}: {f}", r.name);
        }
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name)
        .collect();
    if failed.is_empty() {
        let _ = writeln!(
            out,
            "\nrestart-test: all {} scenarios passed",
            results.len()
        );
    } else {
        let _ = writeln!(
            out,
            "\nrestart-test: {} of {} scenarios FAILED: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
    }
    out
}

/// Per-restart rows of one scenario (`--verbose`).
pub(crate) fn render_restarts(r: &ScenarioResult) -> String {
    let mut rows = vec![
        [
            "#",
            "old pid",
            "new pid",
            "gen",
            "signals",
            "to new ms",
            "old exit ms",
            "gens",
            "fds",
            "fds w/o conns",
            "RSS KiB",
            "zombies",
            "probe max ms",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for (i, x) in r.restarts.iter().enumerate() {
        rows.push(vec![
            (i + 1).to_string(),
            x.old_pid.to_string(),
            opt(x.new_pid.map(|p| p.to_string())),
            opt(x.generation.map(|g| g.to_string())),
            x.signals.to_string(),
            f1(ms(x.to_new)),
            f1(ms(x.to_old_exit)),
            x.generations.to_string(),
            opt(x.fds.map(|v| v.to_string())),
            opt(x.fds_base.map(|v| v.to_string())),
            opt(x.rss_kib.map(|v| v.to_string())),
            x.zombies.to_string(),
            f1(ms(x.probe_max)),
        ]);
    }
    format!("{}:\n{}", r.name, table(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_describes_outcomes() {
        let mut o = Outcomes::default();
        *o.bucket("ok") += 5;
        *o.bucket("partial") += 1;
        *o.bucket("weird") += 2;
        assert_eq!((o.total(), o.failed()), (8, 3));
        assert_eq!(o.describe(), "ok 5, closed 1, other 2");
    }

    #[test]
    fn renders_a_failed_scenario() {
        let mut r = ScenarioResult {
            name: "keepalive",
            ..ScenarioResult::default()
        };
        r.clients.ok = 10;
        r.restarts.push(RestartRecord {
            to_new: Some(Duration::from_millis(3)),
            fds_base: Some(20),
            ..RestartRecord::default()
        });
        r.fail("3 requests lost");
        let text = render(&[r.clone()]);
        assert!(text.contains("FAILED keepalive: 3 requests lost"), "{text}");
        assert!(text.contains("3.0 / 3.0"), "{text}");
        let json = to_json(&[r], Vec::new());
        assert_eq!(json.get("passed"), Some(&Json::Bool(false)));
    }
}
