//! One scenario's results: requests by outcome from every load and client, the restarts, and
//! the verdict.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::harness::load::LoadResult;
use crate::harness::outcomes::{Latency, Outcomes};
use crate::harness::restart::RestartRecord;

use super::super::h2load::H2Stats;

/// One scenario's results and verdict.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScenarioResult {
    pub(crate) name: String,
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
    pub(crate) details: Map<String, Value>,
    /// The server's log.
    pub(crate) log: Option<String>,
}

impl ScenarioResult {
    pub(crate) fn new(name: &str) -> ScenarioResult {
        ScenarioResult {
            name: name.to_owned(),
            ..ScenarioResult::default()
        }
    }

    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub(crate) fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    pub(crate) fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }

    /// A scenario-specific figure for the JSON report.
    pub(crate) fn detail(&mut self, key: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.details.insert(key.to_owned(), value);
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

    /// Failed requests less the excused ones.
    pub(crate) fn lost(&self) -> u64 {
        self.outcomes().failed().saturating_sub(self.excused)
    }

    /// The slowest probe request inside any restart window.
    pub(crate) fn window_max(&self) -> Option<Duration> {
        self.restarts.iter().filter_map(|r| r.probe_max).max()
    }
}
