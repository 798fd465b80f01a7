//! The run as tables a person reads: requests and latency, restarts, what failed; and, with
//! `--verbose`, one row per restart.

use std::fmt::Write as _;

use crate::harness::restart::ms;

use super::result::ScenarioResult;

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

/// A header row from its cells, `|`-separated.
fn header(cells: &str) -> Vec<String> {
    cells.split('|').map(String::from).collect()
}

const REQUESTS: &str = "scenario|verdict|requests|lost|excused|retried|non-2xx|refused|reset|\
                        timeout|tls|closed|goaway|other|p50 ms|p99 ms|p99.9 ms|max ms|\
                        window max ms";
const RESTARTS: &str = "scenario|restarts|to new pid ms (med / max)|old exit ms (med / max)|\
                        gens|fds w/o conns|RSS MiB|zombies|seconds";
const EACH_RESTART: &str = "#|old pid|new pid|gen|signals|to new ms|old exit ms|gens|fds|\
                            fds w/o conns|RSS KiB|zombies|probe max ms";

/// A scenario's row of requests by outcome and latency.
fn requests_row(r: &ScenarioResult) -> Vec<String> {
    let (o, l) = (r.outcomes(), r.latency());
    let verdict = if r.passed() { "ok" } else { "FAILED" };
    let mut row = vec![r.name.clone(), verdict.to_owned()];
    let counts = [o.total(), r.lost(), r.excused, r.retried()];
    // Every outcome but `ok`, in `Outcomes`' order.
    row.extend(counts.iter().chain(&o.values()[1..]).map(u64::to_string));
    row.extend([l.p50, l.p99, l.p999, l.max, ms(r.window_max())].map(f1));
    row
}

/// A scenario's row of restart figures.
fn restarts_row(r: &ScenarioResult) -> Vec<String> {
    let to_new = r.restarts.iter().filter_map(|x| ms(x.to_new)).collect();
    let to_exit = r
        .restarts
        .iter()
        .filter_map(|x| ms(x.to_old_exit))
        .collect();
    vec![
        r.name.clone(),
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
    ]
}

/// The tables a person reads: requests and latency, then restarts, then what failed.
pub(crate) fn render(results: &[ScenarioResult]) -> String {
    let mut requests = vec![header(REQUESTS)];
    requests.extend(results.iter().map(requests_row));
    let mut restarts = vec![header(RESTARTS)];
    restarts.extend(results.iter().map(restarts_row));
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
        .map(|r| r.name.as_str())
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
    let mut rows = vec![header(EACH_RESTART)];
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
    use std::time::Duration;

    use super::*;
    use crate::harness::restart::RestartRecord;

    #[test]
    fn renders_a_failed_scenario() {
        let mut r = ScenarioResult::new("keepalive");
        r.clients.ok = 10;
        r.restarts.push(RestartRecord {
            to_new: Some(Duration::from_millis(3)),
            fds_base: Some(20),
            ..RestartRecord::default()
        });
        r.fail("3 requests lost");
        assert_eq!(requests_row(&r).len(), header(REQUESTS).len());
        assert_eq!(restarts_row(&r).len(), header(RESTARTS).len());
        assert!(render_restarts(&r).contains("probe max ms"));
        let text = render(&[r]);
        assert!(text.contains("FAILED keepalive: 3 requests lost"), "{text}");
        assert!(text.contains("3.0 / 3.0"), "{text}");
        assert!(text.contains("timeout  tls"), "{text}");
    }
}
