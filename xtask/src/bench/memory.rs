//! Resident memory: one idle process, then with many idle keep-alive connections (each has
//! had one request answered), gracedemo and the bare server alike.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::{Ctx, markdown};
use crate::harness::machine::Machine;
use crate::harness::{http, interrupt, ports, procfs};

pub(crate) const BEGIN: &str = "<!-- memory:begin -->";
pub(crate) const END: &str = "<!-- memory:end -->";

struct Measured {
    idle_kib: u64,
    loaded_kib: u64,
    fds: usize,
}

/// Opens `n` keep-alive connections spread over `ports`, each with `GET /pid` answered.
fn open(ports: &[u16], n: usize) -> Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        if i % 1000 == 0 {
            interrupt::check()?;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], ports[i % ports.len()]));
        let mut c = http::connect(addr, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
        let r = http::get_on(&mut c, "/pid", false, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
        if r.status != 200 || r.close {
            bail!("connection {i}: answered {} (close: {})", r.status, r.close);
        }
        conns.push(c);
    }
    Ok(conns)
}

fn measure(pid: u32, ports: &[u16], n: usize) -> Result<Measured> {
    // Settled after start and the first answers.
    interrupt::sleep(Duration::from_millis(500))?;
    let idle_kib = procfs::rss_kib(pid).context("reading the server's VmRSS")?;
    let conns = open(ports, n)?;
    interrupt::sleep(Duration::from_millis(500))?;
    let loaded_kib = procfs::rss_kib(pid).context("reading the server's VmRSS")?;
    let fds = procfs::fd_count(pid).unwrap_or(0);
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
    let mut demo = ctx.demo("bench-memory")?;
    let demo_ports = demo.ports.http;
    let g = measure(demo.current(), &demo_ports, n)?;
    demo.stop()?;
    let ports = ports::free(2)?;
    let (bare_group, bare_pid) = ctx.bare(&ports, "bench-memory-bare")?;
    let b = measure(bare_pid, &ports, n)?;
    drop(bare_group);
    let per = |m: &Measured| (m.loaded_kib.saturating_sub(m.idle_kib)) as f64 * 1024.0 / n as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "## Memory\n");
    let _ = writeln!(
        s,
        "Resident memory (VmRSS) of one process, idle and with {n} idle keep-alive connections \
         (each had one `GET /pid` answered), and the difference per connection.\n"
    );
    let _ = writeln!(
        s,
        "| server | idle | with {n} connections | per connection | open fds then |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (name, m) in [("gracedemo", &g), ("bare hyper-util", &b)] {
        let _ = writeln!(
            s,
            "| {name} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {} |",
            mib(m.idle_kib),
            mib(m.loaded_kib),
            per(m) / 1024.0,
            m.fds
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- The harness raises RLIMIT_NOFILE to {limit} (setrlimit) before starting the servers, \
         which inherit it. gracedemo serves two HTTP ports and its admin port; the connections \
         alternate between its two HTTP ports (bare: two ports as well)."
    );
    let _ = writeln!(
        s,
        "- Command: `cargo xtask bench memory` (`--idle-conns N`)."
    );
    s.push_str(&markdown::machine_and_date(machine, date, ""));
    let _ = writeln!(s, "{END}");
    Ok(s)
}
