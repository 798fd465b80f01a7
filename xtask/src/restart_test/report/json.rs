//! The run as JSON for a program (`--json PATH`): what the tables show and every restart's
//! record, serialised with serde_json. Figures are rounded to three decimals, plenty for
//! milliseconds and ratios, and easier to read.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::harness::load::LoadResult;
use crate::harness::machine::Machine;
use crate::harness::restart::ms;

use super::super::h2load::{self, H2Stats};
use super::result::ScenarioResult;

/// The settings of a run, written ahead of its scenarios.
#[derive(Debug, Serialize)]
pub(crate) struct Header {
    pub(crate) date: String,
    pub(crate) unix_time: u64,
    pub(crate) machine: Machine,
    pub(crate) short: bool,
    pub(crate) restarts: usize,
    pub(crate) interval_ms: f64,
    /// What an unthrottled burst reached, by kind of load.
    pub(crate) capacity_rps: BTreeMap<&'static str, f64>,
    pub(crate) oha: &'static str,
}

fn scenario(r: &ScenarioResult) -> Value {
    json!({
        "name": r.name, "passed": r.passed(), "failures": r.failures, "notes": r.notes,
        "duration_s": r.duration.as_secs_f64(), "outcomes": r.outcomes(), "lost": r.lost(),
        "excused": r.excused, "retried": r.retried(), "client_outcomes": r.clients,
        "h2_clients": r.h2_clients.iter().map(h2_client).collect::<Vec<_>>(),
        "latency_ms": r.latency(), "restart_window_max_latency_ms": ms(r.window_max()),
        "live_generations_max": r.max_generations, "zombies": r.zombies,
        "loads": r.loads.iter().map(load).collect::<Vec<_>>(), "restarts": r.restarts,
        "details": r.details, "server_log": r.log,
    })
}

fn load(l: &LoadResult) -> Value {
    json!({
        "kind": l.kind.map(|k| k.name()), "rate": l.rate, "requested": l.requested,
        "outcomes": l.outcomes, "unaccounted": l.unaccounted(), "errors": l.errors,
        "latency_ms": l.latency, "requests_per_sec": l.rps,
    })
}

fn h2_client(stats: &H2Stats) -> Value {
    let mut v = json!({
        "connections": h2load::CONNS, "streams_per_connection": h2load::STREAMS,
        "lost": stats.lost_total(),
    });
    if let (Value::Object(v), Ok(Value::Object(stats))) = (&mut v, serde_json::to_value(stats)) {
        v.extend(stats);
    }
    v
}

/// The whole run, pretty-printed.
pub(crate) fn render(header: &Header, results: &[ScenarioResult]) -> serde_json::Result<String> {
    let mut document = serde_json::to_value(header)?;
    if let Value::Object(pairs) = &mut document {
        pairs.insert(
            "passed".into(),
            results.iter().all(ScenarioResult::passed).into(),
        );
        pairs.insert("scenarios".into(), results.iter().map(scenario).collect());
    }
    round(&mut document);
    let mut text = serde_json::to_string_pretty(&document)?;
    text.push('\n');
    Ok(text)
}

/// Rounds every fractional number in `value` to three decimals, and writes whole ones without
/// a fraction. (Numbers that are not finite are `null` already: serde_json writes them so.)
fn round(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                *value = if f.fract() == 0.0 && f.abs() < 1e15 {
                    Value::from(f as i64)
                } else {
                    Value::from((f * 1000.0).round() / 1000.0)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(round),
        Value::Object(pairs) => pairs.values_mut().for_each(round),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::harness::restart::RestartRecord;

    #[test]
    fn writes_numbers_plainly_and_every_verdict() {
        let header = Header {
            date: "2026-01-01".into(),
            unix_time: 1,
            machine: Machine::fake(),
            short: true,
            restarts: 3,
            interval_ms: 1500.0,
            capacity_rps: BTreeMap::from([("h2c", 1.23456)]),
            oha: "1.16.0",
        };
        let mut r = ScenarioResult::new("keepalive");
        r.fail("3 requests lost");
        r.detail("nan", f64::NAN);
        r.detail("n", 3_u64);
        r.duration = Duration::from_millis(2500);
        r.h2_clients.push(H2Stats::default());
        r.restarts.push(RestartRecord {
            to_new: Some(Duration::from_micros(3_200)),
            ..RestartRecord::default()
        });
        let text = render(&header, &[r]).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["passed"], json!(false));
        assert_eq!(v["capacity_rps"]["h2c"], json!(1.235));
        assert!(text.contains("\"interval_ms\": 1500,\n"), "{text}");
        let s = &v["scenarios"][0];
        assert_eq!(s["failures"][0], "3 requests lost");
        assert_eq!(s["duration_s"], json!(2.5));
        assert_eq!(
            (&s["details"]["nan"], &s["details"]["n"]),
            (&Value::Null, &json!(3))
        );
        assert_eq!(s["restarts"][0]["to_new_pid_ms"], json!(3.2));
        assert_eq!(s["latency_ms"]["p99_9"], Value::Null);
        assert_eq!(s["h2_clients"][0]["connections"], json!(h2load::CONNS));
        assert_eq!(s["h2_clients"][0]["retried_requests"], json!(0));
    }
}
