//! `cargo xtask`: project automation written in Rust (see `cargo xtask --help`).

mod bench;
mod cli;
mod harness;
mod restart_test;
mod test;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Project automation for grace-rs.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the tests need (Debian packages), then run `cargo test --workspace --locked
    /// [ARGS]`
    Test(test::Args),
    /// Restart scenarios against gracedemo under load from oha
    ///
    /// gracedemo is built in release. Fails on any lost request, more than two live
    /// generations, descriptor or memory growth across restarts, a zombie, or (sigterm) a
    /// process that outlives its stop timeout.
    RestartTest(restart_test::Args),
    /// Measure and rewrite BENCHMARKS.md
    ///
    /// Each SECTION is measured and rewritten in place. Targets are reported as met or missed;
    /// a missed target does not fail the command.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        None => Cli::command().print_help().map_err(anyhow::Error::from),
        Some(Command::Test(args)) => test::run(&args),
        Some(Command::RestartTest(args)) => restart_test::run(args),
        Some(Command::Bench(args)) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
