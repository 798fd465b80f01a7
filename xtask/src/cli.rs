//! What the commands' arguments have in common.

use std::ops::RangeInclusive;

use clap::builder::RangedU64ValueParser;

/// A count flag's values: `range`, as a `usize`.
pub(crate) fn count(range: RangeInclusive<u64>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(range)
}

/// `named` each once, in the order first named; `all` when none was named.
pub(crate) fn each_once<T: Copy + PartialEq>(named: &[T], all: &[T]) -> Vec<T> {
    let first = named
        .iter()
        .enumerate()
        .filter(|&(i, t)| !named[..i].contains(t));
    let chosen: Vec<T> = first.map(|(_, &t)| t).collect();
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

/// Checks that each of `lines` fails, with the first line of clap's error naming the line's
/// first word (the flag, without its value; or the word clap did not know).
#[cfg(test)]
pub(crate) fn assert_rejected<A: clap::Args + std::fmt::Debug>(lines: &[&str]) {
    for line in lines {
        let error = match parse::<A>(line) {
            Ok(args) => panic!("{line:?} parsed: {args:?}"),
            Err(e) => e.to_string(),
        };
        let flag = line.split([' ', '=']).next().unwrap_or_default();
        let first = error.lines().next().unwrap_or_default();
        assert!(first.contains(flag), "{line}: {first}");
    }
}
