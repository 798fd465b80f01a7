//! Requests by outcome and latency percentiles: what every load and client reports, and
//! what the verdicts count.

use serde::Serialize;

/// Requests by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
    pub(crate) const NAMES: [&'static str; 9] = [
        "ok", "non2xx", "refused", "reset", "timeout", "tls", "closed", "goaway", "other",
    ];

    /// The counters in the order of [`Outcomes::NAMES`].
    pub(crate) fn values(&self) -> [u64; 9] {
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
        for (name, n) in Self::NAMES.into_iter().zip(o.values()) {
            *self.bucket(name) += n;
        }
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
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    #[serde(rename = "p99_9")]
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
}
