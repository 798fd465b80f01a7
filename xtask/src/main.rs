//! `cargo xtask`: project automation written in Rust (see `cargo xtask help`).

mod bench;
mod test;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  help          print this text
  test [ARGS]   install what the tests need (Debian packages), then run
                `cargo test --workspace --locked [ARGS]`
  bench [ARGS]  run gracedown's overhead benchmark (tracked vs bare loopback echo server) and
                rewrite the \"gracedown overhead\" section of BENCHMARKS.md; ARGS go to the
                benchmark (--runs N, --conns N, --size BYTES, --warmup-ms N, --measure-ms N)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("bench") => bench::run(&args[1..]),
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
