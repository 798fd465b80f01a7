//! The workspace's test kit: what the tests of gracenet, gracedown, gracehttp and the examples
//! (and `cargo xtask`) share, one version of each, split by concern.
//!
//! - [`wait`]: bounded polling and awaiting, and [`TIMEOUT`], the bound of every wait;
//! - [`fs`]: a [`TempDir`] of the test's own, scripts, a symlink or file swapped atomically,
//!   pid files;
//! - [`which`](mod@which): a program on `PATH`;
//! - [`net`]: loopback addresses with a free port;
//! - [`process`], [`output`]: a real process spawned with its output captured, in a process
//!   group of its own, killed and reaped by its guard on every path; [`procfs`]: what `/proc`
//!   shows (process groups, zombies, CPU time, descriptors, socket inodes);
//! - [`line`](mod@line): a client of line protocols; [`http`]: the raw HTTP/1.1 client and hyper's
//!   HTTP/1.1 and HTTP/2 clients, plain or TLS; [`blocking`]: a runtime that drives them from a
//!   synchronous test;
//! - [`certs`], [`tls`]: a CA and leaf certificates minted at test time; a TLS client that
//!   trusts only that CA;
//! - [`metrics`]: the one Prometheus text parser.
//!
//! The kit depends on none of the workspace's own libraries (their tests depend on it). What
//! `cargo xtask` can use (temp dirs, `which`, metrics, certificates, HTTP clients) returns its
//! errors; the test-only conveniences elsewhere panic with what they were doing, and say so.
//!
//! ```no_run
//! use testkit::{TIMEOUT, TempDir, spawn, wait_until};
//!
//! let dir = TempDir::new("example").unwrap();
//! let marker = dir.join("started");
//! let script = dir
//!     .script("run.sh", &format!("#!/bin/sh\n: > '{}'\nexec sleep 60\n", marker.display()))
//!     .unwrap();
//! // Killed and reaped, with its whole process group, when `server` is dropped.
//! let server = spawn(&script, [] as [&str; 0]);
//! assert!(wait_until(TIMEOUT, || marker.exists().then_some(())).is_some());
//! # drop(server);
//! ```

pub mod blocking;
pub mod certs;
pub mod fs;
pub mod http;
pub mod line;
pub mod metrics;
pub mod net;
pub mod output;
pub mod process;
pub mod procfs;
pub mod tls;
pub mod wait;
pub mod which;

pub use fs::TempDir;
pub use net::{LOCAL, free_addr};
pub use output::Output;
pub use process::{Finished, Proc, Spawned, spawn, spawn_command};
pub use wait::{TIMEOUT, wait_until, wait_until_async, within};
pub use which::which;
