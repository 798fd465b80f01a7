//! Prometheus text, as gracedemo's admin port serves it, read into `name{labels}` -> value.

use std::collections::BTreeMap;

/// Prometheus text lines `name{labels} value` into a map; comments and lines without a number
/// are skipped.
pub(crate) fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics() {
        let m = parse("# HELP x y\nx{a=\"b c\"} 3\ngracehttp_generation 2\nbad\n");
        assert_eq!(m.get("x{a=\"b c\"}"), Some(&3.0));
        assert_eq!(m.get("gracehttp_generation"), Some(&2.0));
        assert_eq!(m.len(), 2);
    }
}
