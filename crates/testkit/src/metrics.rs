//! The Prometheus text format, as gracehttp's admin port serves it, read into samples: a series
//! (`name{labels}`, exactly as written) and its value.
//!
//! One parser for the tests and `cargo xtask`. It reads the sample lines of the exposition
//! format (version 0.0.4): comments and blank lines are skipped, a label value may hold spaces,
//! braces and escaped quotes, and an optional timestamp after the value is ignored. A line it
//! cannot read is skipped, never a panic.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample<'a> {
    /// The series: the metric name with its labels, exactly as written
    /// (`gracehttp_requests_total{server="web"}`).
    pub series: &'a str,
    /// The value as written (`3`, `0.25`, `NaN`, `+Inf`).
    pub value: &'a str,
}

impl Sample<'_> {
    /// The value as a number.
    pub fn as_f64(&self) -> Option<f64> {
        self.value.parse().ok()
    }

    /// The value as a whole number (a count, a pid, a generation); `None` for a fraction, a
    /// negative number or no number.
    pub fn as_u64(&self) -> Option<u64> {
        self.value.parse().ok().or_else(|| {
            let v = self.as_f64()?;
            // Exactly representable whole numbers only: no rounding of a fraction or of a
            // value past 2^53.
            (v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0).then_some(v as u64)
        })
    }
}

/// The sample lines of `text`, in order.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(sample)
}

/// One line as a sample; `None` for a comment, a blank line or a line it cannot read.
fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    if name_end == 0 {
        return None; // a series has a name
    }
    let series_end = if line[name_end..].starts_with('{') {
        name_end + labels_len(&line[name_end..])?
    } else {
        name_end
    };
    let value = line[series_end..].split_ascii_whitespace().next()?;
    Some(Sample {
        series: &line[..series_end],
        value,
    })
}

/// The length of the label set at the start of `text` (from `{` to its `}`), skipping braces
/// inside quoted values; `None` if it never closes.
fn labels_len(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Every series of `text` with its value, for a program that reads them all (a later line of
/// the same series wins). Values that are not numbers are left out.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    samples(text)
        .filter_map(|s| Some((s.series.to_owned(), s.as_f64()?)))
        .collect()
}

/// The value of `series` (labels included, exactly as rendered) in `text`.
pub fn get(text: &str, series: &str) -> Option<f64> {
    samples(text).find(|s| s.series == series)?.as_f64()
}

/// The value of `series` (labels included, exactly as rendered) in `text`, as a whole number:
/// what the tests compare counters, gauges of things, pids and generations with.
pub fn count(text: &str, series: &str) -> Option<u64> {
    samples(text).find(|s| s.series == series)?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP gracehttp_requests_total Requests, by server.
# TYPE gracehttp_requests_total counter
gracehttp_requests_total{server=\"web\"} 3
gracehttp_requests_total{server=\"admin\"} 12
gracehttp_generation 2

odd{path=\"/a b}\",quote=\"say \\\"hi\\\" }\"} 7 1712000000000
ratio 0.25
nothing NaN
bad
{} 5
unclosed{a=\"b\" 4
";

    #[test]
    fn reads_series_and_values_as_written() {
        let all: Vec<_> = samples(TEXT).map(|s| (s.series, s.value)).collect();
        assert_eq!(
            all,
            [
                ("gracehttp_requests_total{server=\"web\"}", "3"),
                ("gracehttp_requests_total{server=\"admin\"}", "12"),
                ("gracehttp_generation", "2"),
                ("odd{path=\"/a b}\",quote=\"say \\\"hi\\\" }\"}", "7"),
                ("ratio", "0.25"),
                ("nothing", "NaN"),
            ]
        );
    }

    #[test]
    fn counts_are_whole_numbers_of_an_exact_series() {
        assert_eq!(
            count(TEXT, "gracehttp_requests_total{server=\"web\"}"),
            Some(3)
        );
        assert_eq!(count(TEXT, "gracehttp_generation"), Some(2));
        // A prefix of a series is not the series.
        assert_eq!(count(TEXT, "gracehttp_requests_total"), None);
        assert_eq!(count(TEXT, "gracehttp_generatio"), None);
        assert_eq!(count(TEXT, "ratio"), None);
        assert_eq!(count(TEXT, "nothing"), None);
        assert_eq!(count("x 2.0\ny -1\n", "x"), Some(2));
        assert_eq!(count("x 2.0\ny -1\n", "y"), None);
        assert_eq!(get(TEXT, "ratio"), Some(0.25));
        assert!(get(TEXT, "nothing").is_some_and(f64::is_nan));
    }

    #[test]
    fn parses_into_a_map_of_numbers() {
        let all = parse(TEXT);
        assert_eq!(
            all.get("gracehttp_requests_total{server=\"admin\"}"),
            Some(&12.0)
        );
        assert_eq!(
            all.get("odd{path=\"/a b}\",quote=\"say \\\"hi\\\" }\"}"),
            Some(&7.0)
        );
        assert_eq!(all.len(), 6);
        assert_eq!(parse("x +Inf\ny -Inf\n").get("x"), Some(&f64::INFINITY));
    }
}
