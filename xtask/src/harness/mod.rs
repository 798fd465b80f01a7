//! What `restart-test` and `bench` share: gracedemo built, started in a process group of its
//! own and restarted; the harness as the subreaper of every generation; load from oha; and the
//! small pieces under them. Neither command reaches into the other; both reach in here.
//!
//! - `prepare.rs`: what a run needs before its first server;
//! - `cargo.rs`: cargo through `$CARGO`, release builds of the examples;
//! - `oha.rs`, `load.rs`: installing oha and reading its report; running it;
//! - `demo.rs`, `restart.rs`: gracedemo started, asked, stopped; restarted and probed;
//! - `group.rs`: a server's process group, scanned, reaped, counted, killed;
//! - `process.rs`, `exit_watch.rs`, `procfs.rs`, `interrupt.rs`: signals, subreaper and
//!   reaping (nix); a process's exit as it happens (a pidfd); what /proc says; Ctrl-C;
//! - `outcomes.rs`: requests by outcome, latency percentiles;
//! - `http.rs`, `metrics.rs`, `certs.rs`, `ports.rs`, `which.rs`, `workdir.rs`, `machine.rs`:
//!   a small HTTP/1.1 client, Prometheus text, test certificates (rcgen), free ports, a program
//!   on `PATH`, working directories, the machine and date a report states.

pub(crate) mod cargo;
pub(crate) mod certs;
pub(crate) mod demo;
pub(crate) mod exit_watch;
pub(crate) mod group;
pub(crate) mod http;
pub(crate) mod interrupt;
pub(crate) mod load;
pub(crate) mod machine;
pub(crate) mod metrics;
pub(crate) mod oha;
pub(crate) mod outcomes;
pub(crate) mod ports;
mod prepare;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod restart;
pub(crate) mod which;
pub(crate) mod workdir;

pub(crate) use prepare::prepare;
