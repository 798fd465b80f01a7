//! Resident memory: one idle process, then with many idle keep-alive connections (each has
//! had one request answered), gracedemo and the bare server alike.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::{Ctx, markdown};
use crate::harness::machine::Machine;
use crate::harness::{http, interrupt, procfs};

pub(crate) const BEGIN: &str = "<!-- memory:begin -->";
pub(crate) const END: &str = "<!-- memory:end -->";

struct Measured {
    idle_kib: u64,
    loaded_kib: u64,
    fds: usize,
}

/// Opens `n` keep-alive connections spread over `addrs`, each with `GET /pid` answered.
fn open(addrs: &[SocketAddr], n: usize) -> Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        if i % 1000 == 0 {
            interrupt::check()?;
        }
        let addr = addrs[i % addrs.len()];
        let mut c = http::connect(addr, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
        let r = http::get_on(&mut c, "/pid", false, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
        if r.status != 200 || r.closes() {
            bail!(
                "connection {i}: answered {} (close: {})",
                r.status,
                r.closes()
            );
        }
        conns.push(c);
    }
    Ok(conns)
}

fn measure(pid: u32, addrs: &[SocketAddr], n: usize) -> Result<Measured> {
    // Settled after start and the first answers.
    interrupt::sleep(Duration::from_millis(500))?;
    let idle_kib = procfs::rss_kib(pid).context("reading the server's VmRSS")?;
    let conns = open(addrs, n)?;
    interrupt::sleep(Duration::from_millis(500))?;
    let loaded_kib = procfs::rss_kib(pid).context("reading the server's VmRSS")?;
    let fds = testkit::procfs::fd_count(pid).unwrap_or(0);
    drop(conns);
    Ok(Measured {
        idle_kib,
        loaded_kib,
        fds,
    })
}

/// Raises the descriptor limit (soft, and hard when allowed) to `want`; returns the soft limit
/// now in force. Children inherit it.
fn raise_fd_limit(want: u64) -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(soft);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)).is_ok() {
        return Ok(want);
    }
    // Not allowed to raise the hard limit: go as far as it allows.
    setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard)?;
    Ok(want.min(hard))
}

pub(crate) fn run(ctx: &Ctx, n: usize, machine: &Machine, date: &str) -> Result<String> {
    // Each side holds n descriptors; the servers inherit the limit.
    let limit = raise_fd_limit(n as u64 * 2 + 1024).context("raising RLIMIT_NOFILE")?;
    if limit < n as u64 + 256 {
        bail!("RLIMIT_NOFILE is {limit}, too low for {n} connections");
    }
    eprintln!("xtask: memory with {n} idle keep-alive connections (RLIMIT_NOFILE {limit})");
    let mut demo = ctx.demo_of(&ctx.gracedemo, "bench-memory")?;
    let demo_ports = demo.ports.http;
    let g = measure(demo.current, &demo_ports, n)?;
    demo.stop()?;
    let addrs = testkit::net::free_addrs(2).context("picking free loopback ports")?;
    let (bare_group, bare_pid) = ctx.bare(&addrs, "bench-memory-bare")?;
    let b = measure(bare_pid, &addrs, n)?;
    drop(bare_group);
    Ok(render(&g, &b, n, limit, machine, date))
}

/// The section: gracedemo's figures `g` and the bare server's `b`, with `n` connections under
/// the descriptor limit `limit`.
fn render(
    g: &Measured,
    b: &Measured,
    n: usize,
    limit: u64,
    machine: &Machine,
    date: &str,
) -> String {
    let mut s = format!(
        "{BEGIN}\n## Memory\n\nResident memory (VmRSS) of one process, idle and with {n} idle \
         keep-alive connections (each had one `GET /pid` answered), and the difference per \
         connection.\n\n| server | idle | with {n} connections | per connection | open fds then \
         |\n|---|---:|---:|---:|---:|\n"
    );
    for (name, m) in [("gracedemo", g), ("bare hyper-util", b)] {
        let per_conn = m.loaded_kib.saturating_sub(m.idle_kib) as f64 / n as f64;
        let (idle, loaded) = (m.idle_kib as f64 / 1024.0, m.loaded_kib as f64 / 1024.0);
        let _ = writeln!(
            s,
            "| {name} | {idle:.1} MiB | {loaded:.1} MiB | {per_conn:.1} KiB | {} |",
            m.fds
        );
    }
    let _ = writeln!(
        s,
        "\n- The harness raises RLIMIT_NOFILE to {limit} (setrlimit) before starting the servers, \
         which inherit it. gracedemo serves two HTTP ports and its admin port; the connections \
         alternate between its two HTTP ports (bare: two ports as well).\n- Command: `cargo \
         xtask bench memory` (`--idle-conns N`).\n{}{END}",
        markdown::machine_and_date(machine, date, "")
    );
    s
}
