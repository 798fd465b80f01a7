//! `cargo xtask`: project automation written in Rust (see `cargo xtask help`).

mod bench;
mod restart_test;
mod test;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  help                  print this text
  test [ARGS]           install what the tests need (Debian packages), then run
                        `cargo test --workspace --locked [ARGS]`
  restart-test [ARGS]   restart scenarios against gracedemo under load from oha; fails on any
                        lost request, more than two live generations, fd or RSS growth across
                        restarts, or a zombie (`cargo xtask restart-test --help`, `--list`)
  bench [ARGS]          measure and rewrite BENCHMARKS.md: gracedown's overhead, gracedemo
                        against a bare hyper-util server, restart latency, memory
                        (`cargo xtask bench --help`)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("bench") => bench::run(&args[1..]),
        Some("restart-test") => restart_test::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
