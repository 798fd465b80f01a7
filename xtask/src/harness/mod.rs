//! What `restart-test` and `bench` share: gracedemo built, started in a process group of its
//! own and restarted; the harness as the subreaper of every generation; load from oha; and the
//! small pieces under them. Neither command reaches into the other; both reach in here, and
//! here reaches into the workspace's test kit (`testkit`) for what every test package shares.
//!
//! - `prepare.rs`: what a run needs before its first server, and where its files go;
//! - `cargo.rs`: cargo through `$CARGO`, release builds of the examples;
//! - `oha.rs`, `load.rs`: installing oha and reading its report; running it;
//! - `demo.rs`, `restart.rs`: gracedemo started, asked, stopped; restarted and probed;
//! - `group.rs`: a server's process group, scanned, reaped, counted, killed;
//! - `process.rs`, `exit_watch.rs`, `procfs.rs`, `interrupt.rs`: signals and reaping (nix); a
//!   process's exit as it happens (a pidfd); what /proc says beyond the kit; Ctrl-C;
//! - `outcomes.rs`: requests by outcome, latency percentiles;
//! - `http.rs`, `machine.rs`: a blocking HTTP/1.1 client; the machine and date a report states.

pub(crate) mod cargo;
pub(crate) mod demo;
pub(crate) mod exit_watch;
pub(crate) mod group;
pub(crate) mod http;
pub(crate) mod interrupt;
pub(crate) mod load;
pub(crate) mod machine;
pub(crate) mod oha;
pub(crate) mod outcomes;
mod prepare;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod restart;

pub(crate) use prepare::prepare;
