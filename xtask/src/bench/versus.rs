//! gracedemo against the same handler on a bare hyper-util server (`examples/bare.rs`): the
//! throughput ratio (target 0.97 or better) and latency, with the same load tool in the same
//! run, alternating which goes first.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};

use super::{Ctx, markdown, max, median, min};
use crate::harness::load::{self, Kind, Load, LoadResult};
use crate::harness::machine::Machine;
use crate::harness::{interrupt, oha};

pub(crate) const BEGIN: &str = "<!-- gracedemo-vs-bare:begin -->";
pub(crate) const END: &str = "<!-- gracedemo-vs-bare:end -->";
const TARGET: f64 = 0.97;

/// One oha run; every request must succeed.
fn oha(ctx: &Ctx, url: &str, rate: Option<u64>, requests: u64, tag: &str) -> Result<LoadResult> {
    let load = Load {
        kind: Kind::KEEPALIVE,
        url: url.to_owned(),
        rate,
        requests,
        ca: None,
    };
    let r = load::start(&ctx.oha, &load, &ctx.dir, tag)?.finish()?;
    if r.outcomes.failed() > 0 || r.unaccounted() > 0 {
        bail!(
            "{tag}: not every request succeeded ({})",
            r.outcomes.describe()
        );
    }
    Ok(r)
}

struct Run {
    /// Throughput, unthrottled: gracedemo, bare.
    rps: (f64, f64),
    /// Latency at the fixed rate: (p50, p99, p99.9) ms, gracedemo then bare.
    latency: ([f64; 3], [f64; 3]),
}

/// Run `run` of both variants (gracedemo first in `variants`): `requests` unthrottled in halves
/// ordered A B B A, A alternating between runs, so that both see the same share of whatever else
/// the machine does meanwhile; then `lat_requests` each at `rate`.
fn measure(
    ctx: &Ctx,
    run: usize,
    variants: &[(String, &str); 2],
    requests: u64,
    rate: u64,
    lat_requests: u64,
) -> Result<Run> {
    let (a, b) = (run % 2, 1 - run % 2);
    let mut secs = [0.0; 2];
    for (i, v) in [a, b, b, a].into_iter().enumerate() {
        let (url, name) = &variants[v];
        let tag = format!("run{run}-{i}-{name}-throughput");
        let t = oha(ctx, url, None, requests / 2, &tag)?;
        secs[v] += (requests / 2) as f64 / t.rps.max(1.0);
    }
    let mut latency = [[0.0; 3]; 2];
    for v in [a, b] {
        let (url, name) = &variants[v];
        let l = oha(
            ctx,
            url,
            Some(rate),
            lat_requests,
            &format!("run{run}-{name}-latency"),
        )?;
        latency[v] = [l.latency.p50, l.latency.p99, l.latency.p999].map(|v| v.unwrap_or(f64::NAN));
    }
    Ok(Run {
        rps: (requests as f64 / secs[0], requests as f64 / secs[1]),
        latency: (latency[0], latency[1]),
    })
}

pub(crate) fn run(
    ctx: &Ctx,
    runs: usize,
    secs: f64,
    machine: &Machine,
    date: &str,
) -> Result<String> {
    let mut demo = ctx.demo_of(&ctx.gracedemo, "bench-gracedemo")?;
    let addrs = testkit::net::free_addrs(1).context("picking a free loopback port")?;
    let (bare_group, _) = ctx.bare(&addrs, "bench-bare")?;
    let url_demo = format!("http://{}/", demo.ports.http[0]);
    let url_bare = format!("http://{}/", addrs[0]);
    // One untimed pass of each sizes the runs and warms both up.
    let warm = |url: &str, tag: &str| oha(ctx, url, None, 20_000, tag).map(|r| r.rps);
    let capacity = warm(&url_demo, "warm-gracedemo")?.max(warm(&url_bare, "warm-bare")?);
    let requests = (capacity * secs) as u64;
    // Latency at a fixed rate both sustain easily: half of what the faster one does.
    let rate = (capacity / 2.0) as u64;
    let lat_requests = (rate as f64 * secs) as u64;
    eprintln!(
        "xtask: {runs} runs of {requests} requests unthrottled and {lat_requests} at {rate} req/s, each variant"
    );
    let variants = [(url_demo, "gracedemo"), (url_bare, "bare")];
    let mut results = Vec::new();
    for run in 0..runs {
        interrupt::check()?;
        let r = measure(ctx, run, &variants, requests, rate, lat_requests)?;
        eprintln!(
            "xtask: run {}: gracedemo {:.0} req/s, bare {:.0} req/s, ratio {:.3}",
            run + 1,
            r.rps.0,
            r.rps.1,
            r.rps.0 / r.rps.1
        );
        results.push(r);
    }
    demo.stop()?;
    drop(bare_group);
    Ok(render(
        &results,
        rate,
        requests,
        lat_requests,
        secs,
        machine,
        date,
    ))
}

fn render(
    runs: &[Run],
    rate: u64,
    requests: u64,
    lat_requests: u64,
    secs: f64,
    machine: &Machine,
    date: &str,
) -> String {
    let ratios: Vec<f64> = runs.iter().map(|r| r.rps.0 / r.rps.1).collect();
    let (med, lo, hi) = (median(&ratios), min(&ratios), max(&ratios));
    let verdict = if med >= TARGET { "meets" } else { "misses" };
    // The median over the runs of one latency percentile `p` of one side (0 gracedemo, 1 bare).
    let lat = |side: usize, p: usize| {
        median(
            &runs
                .iter()
                .map(|r| [r.latency.0, r.latency.1][side][p])
                .collect::<Vec<_>>(),
        )
    };
    let mut s = format!(
        "{BEGIN}\n## gracedemo against a bare hyper-util server\n\nThroughput of `gracedemo` \
         relative to `examples/bare.rs` (the same handler on a bare hyper-util `auto` server: no \
         drain tracking, no admin port, no signals), gracedemo / bare: **median {med:.3}, spread \
         {lo:.3}..{hi:.3}** over {} runs. That {verdict} the target of {TARGET:.2} or better.\n\n",
        runs.len()
    );
    let _ = writeln!(
        s,
        "Latency at a fixed {rate} req/s (half of what the faster variant does; oha \
         `--latency-correction`), median over the runs: gracedemo p50 {:.2} ms, p99 {:.2} ms, \
         p99.9 {:.2} ms; bare p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms.\n\n- Load: oha {}, \
         `GET /` over HTTP/1.1 keep-alive, 32 connections, on the same machine. Each run measures \
         both servers: {requests} requests each unthrottled for throughput (about {secs} s), in \
         halves ordered A B B A, A alternating between runs; then {lat_requests} requests each at \
         the fixed rate for latency. One untimed pass of each precedes the first run.\n- Command: \
         `cargo xtask bench http` (builds both in release; `--http-runs N`, `--http-secs S`).\n{}\n\
         | run | gracedemo (req/s) | bare (req/s) | gracedemo / bare | gracedemo p99 ms | bare p99 \
         ms |\n|----:|---:|---:|---:|---:|---:|",
        lat(0, 0),
        lat(0, 1),
        lat(0, 2),
        lat(1, 0),
        lat(1, 1),
        lat(1, 2),
        oha::VERSION,
        markdown::machine_and_date(machine, date, "; client and servers share it"),
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.3} | {:.2} | {:.2} |",
            i + 1,
            r.rps.0,
            r.rps.1,
            r.rps.0 / r.rps.1,
            r.latency.0[1],
            r.latency.1[1]
        );
    }
    let _ = writeln!(s, "{END}");
    s
}
