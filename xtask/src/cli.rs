//! What the commands' arguments have in common.

use std::ops::RangeInclusive;

use clap::builder::RangedU64ValueParser;

/// A count flag's values: `range`, as a `usize`.
pub(crate) fn count(range: RangeInclusive<u64>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(range)
}

/// `named` each once, in the order first named; `all` when none was named.
pub(crate) fn each_once<T: Copy + PartialEq>(named: &[T], all: &[T]) -> Vec<T> {
    let mut chosen: Vec<T> = Vec::new();
    for &t in named {
        if !chosen.contains(&t) {
            chosen.push(t);
        }
    }
    if chosen.is_empty() {
        all.to_vec()
    } else {
        chosen
    }
}

/// One command's arguments parsed from `line` (words split at spaces), as clap would.
#[cfg(test)]
pub(crate) fn parse<A: clap::Args>(line: &str) -> Result<A, clap::Error> {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    let argv = std::iter::once("xtask").chain(line.split_whitespace());
    Command::<A>::try_parse_from(argv).map(|c| c.args)
}

/// The first line of clap's error for `line`, which must fail.
#[cfg(test)]
pub(crate) fn first_error_line<A: clap::Args + std::fmt::Debug>(line: &str) -> String {
    match parse::<A>(line) {
        Ok(args) => panic!("{line:?} parsed: {args:?}"),
        Err(e) => e.to_string().lines().next().unwrap_or_default().to_owned(),
    }
}
