//! Counters of the running servers, and their Prometheus text rendering.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use gracedown::Drain;

/// The counters of one server.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    pub(crate) name: String,
    pub(crate) drain: Drain,
    pub(crate) requests: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
}

impl ServerMetrics {
    pub(crate) fn new(name: String, drain: Drain) -> ServerMetrics {
        ServerMetrics {
            name,
            drain,
            requests: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
        }
    }
}

/// The counters of this process.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) servers: RwLock<Vec<Arc<ServerMetrics>>>,
    pub(crate) upgrades_done: AtomicU64,
    pub(crate) upgrades_failed: AtomicU64,
    pub(crate) tls_reloads_failed: AtomicU64,
    pub(crate) generation: AtomicU64,
    pub(crate) draining: AtomicBool,
}

impl Metrics {
    pub(crate) fn add(&self, server: Arc<ServerMetrics>) {
        self.servers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(server);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let servers = self
            .servers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut out = String::with_capacity(2048);
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_server = |f: &dyn Fn(&ServerMetrics) -> u64| -> Vec<(String, u64)> {
            servers
                .iter()
                .map(|s| (format!("{{server=\"{}\"}}", escape(&s.name)), f(s)))
                .collect()
        };
        family(
            "gracehttp_connections_active",
            "gauge",
            "Connections open now.",
            &per_server(&|s| s.drain.counters().active as u64),
        );
        family(
            "gracehttp_connections_accepted_total",
            "counter",
            "Connections accepted by this process.",
            &per_server(&|s| s.drain.counters().accepted),
        );
        family(
            "gracehttp_connections_forced_total",
            "counter",
            "Connections force-closed at the stop deadline.",
            &per_server(&|s| s.drain.counters().forced),
        );
        family(
            "gracehttp_requests_total",
            "counter",
            "Requests received by this process.",
            &per_server(&|s| s.requests.load(Ordering::Relaxed)),
        );
        family(
            "gracehttp_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            &per_server(&|s| s.tls_failures.load(Ordering::Relaxed)),
        );
        family(
            "gracehttp_upgrades_total",
            "counter",
            "Upgrades attempted by this process, by result.",
            &[
                (
                    "{result=\"done\"}".to_owned(),
                    self.upgrades_done.load(Ordering::Relaxed),
                ),
                (
                    "{result=\"failed\"}".to_owned(),
                    self.upgrades_failed.load(Ordering::Relaxed),
                ),
            ],
        );
        family(
            "gracehttp_tls_reloads_failed_total",
            "counter",
            "Certificate reloads that failed (the old certificate stayed).",
            &[(
                String::new(),
                self.tls_reloads_failed.load(Ordering::Relaxed),
            )],
        );
        family(
            "gracehttp_generation",
            "gauge",
            "Handovers before this process: 0 for the first.",
            &[(String::new(), self.generation.load(Ordering::Relaxed))],
        );
        family(
            "gracehttp_draining",
            "gauge",
            "1 once this process stopped accepting.",
            &[(
                String::new(),
                u64::from(self.draining.load(Ordering::Relaxed)),
            )],
        );
        family(
            "gracehttp_process_id",
            "gauge",
            "The pid of this process.",
            &[(String::new(), u64::from(std::process::id()))],
        );
        out
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_type() {
        let m = Metrics::default();
        m.add(Arc::new(ServerMetrics::new("we\"b".into(), Drain::new())));
        m.upgrades_failed.store(2, Ordering::Relaxed);
        let text = m.render();
        assert!(
            text.contains("gracehttp_connections_active{server=\"we\\\"b\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("gracehttp_upgrades_total{result=\"failed\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gracehttp_generation gauge\ngracehttp_generation 0\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
