//! What gracedown's tracking costs a server: a loopback echo server run bare (tokio's
//! `TcpListener` and `TcpStream`) and tracked (`TrackedListener`, `Tracked`, `Tracked::spawn`),
//! in the same process, alternated, with many connections ping-ponging small messages.
//!
//! `cargo bench -p gracedown --bench overhead` (or `cargo xtask bench`, which runs this and
//! writes BENCHMARKS.md). Options after `--`: `--runs N`, `--conns N`, `--size BYTES`,
//! `--warmup-ms N`, `--measure-ms N`. Run without `--bench` (as `cargo test --benches` does)
//! it only does a short smoke run.
//!
//! Output, one record a line, `key=value` fields after a record name, for `cargo xtask bench`:
//!
//! ```text
//! gracedown-overhead config conns=64 size=64 runs=15 warmup_ms=150 measure_ms=600 workers=2
//! gracedown-overhead sample run=1 variant=bare round_trips=99518 secs=0.601030 rate=165579.9
//! gracedown-overhead sample run=1 variant=tracked round_trips=101526 secs=0.601261 rate=168855.2
//! gracedown-overhead result runs=15 ratio_median=0.9965 ratio_min=0.9508 ratio_max=1.0387
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use gracedown::{Drain, StopTimeouts, TrackedListener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy)]
struct Config {
    runs: usize,
    conns: usize,
    size: usize,
    warmup: Duration,
    measure: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    Tracked,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Tracked => "tracked",
        }
    }
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

fn parse_args() -> Result<Config, Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and then a smoke run
    // is enough to show the benchmark still works.
    let mut config = if args.iter().any(|a| a == "--bench") {
        // Many short pairs rather than a few long ones: on a shared machine the load of other
        // processes drifts, and a pair measured within about a second sees the same drift.
        Config {
            runs: 15,
            conns: 64,
            size: 64,
            warmup: Duration::from_millis(150),
            measure: Duration::from_millis(600),
        }
    } else {
        Config {
            runs: 1,
            conns: 4,
            size: 64,
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(50),
        }
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || -> Result<u64, Error> {
            let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
            Ok(value.parse().map_err(|e| format!("{arg} {value}: {e}"))?)
        };
        match arg.as_str() {
            "--runs" => config.runs = usize::try_from(value()?)?.max(1),
            "--conns" => config.conns = usize::try_from(value()?)?.max(1),
            "--size" => config.size = usize::try_from(value()?)?.max(1),
            "--warmup-ms" => config.warmup = Duration::from_millis(value()?),
            "--measure-ms" => config.measure = Duration::from_millis(value()?.max(1)),
            // `--bench` and any filter cargo passes along.
            _ => {}
        }
    }
    Ok(config)
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn bare_server(listener: TcpListener) -> Result<(), Error> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(echo(stream));
    }
}

async fn tracked_server(mut listener: TrackedListener<TcpListener>) -> Result<(), Error> {
    while let Some(accepted) = listener.accept().await {
        let (conn, _) = accepted?;
        conn.get_ref().set_nodelay(true)?;
        conn.spawn(echo);
    }
    Ok(())
}

/// Ping-pongs `size`-byte messages; returns the round trips completed while measuring.
async fn client(addr: SocketAddr, size: usize, phase: Arc<AtomicU8>) -> Result<u64, Error> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let message = vec![0x5a; size];
    let mut reply = vec![0; size];
    let mut round_trips = 0;
    loop {
        stream.write_all(&message).await?;
        stream.read_exact(&mut reply).await?;
        match phase.load(Ordering::Relaxed) {
            WARMING => {}
            MEASURING => round_trips += 1,
            _ => return Ok(round_trips),
        }
    }
}

/// One measurement: a fresh server of `variant`, `conns` clients, a warm-up, a timed window.
/// Returns (round trips in the window, window length in seconds).
async fn sample(variant: Variant, config: Config) -> Result<(u64, f64), Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let drain = Drain::new();
    let server = match variant {
        Variant::Bare => tokio::spawn(bare_server(listener)),
        Variant::Tracked => tokio::spawn(tracked_server(drain.track_listener(listener))),
    };
    let phase = Arc::new(AtomicU8::new(WARMING));
    let mut clients = JoinSet::new();
    for _ in 0..config.conns {
        clients.spawn(client(addr, config.size, Arc::clone(&phase)));
    }
    tokio::time::sleep(config.warmup).await;
    phase.store(MEASURING, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(config.measure).await;
    phase.store(STOPPING, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let mut round_trips = 0;
    while let Some(done) = clients.join_next().await {
        round_trips += done??;
    }
    server.abort();
    // The clients are gone, so every echo task ends on EOF; for the tracked server, wait for
    // that (it is free), so no task of this sample runs into the next one.
    let short = StopTimeouts {
        stop: Some(Duration::from_secs(5)),
        kill: Some(Duration::from_secs(1)),
    };
    drain.shutdown(short).await;
    Ok((round_trips, secs))
}

fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

async fn run(config: Config) -> Result<(), Error> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "gracedown-overhead config conns={} size={} runs={} warmup_ms={} measure_ms={} workers={workers}",
        config.conns,
        config.size,
        config.runs,
        config.warmup.as_millis(),
        config.measure.as_millis(),
    );
    // One untimed pass of each first: the first sample of a process pays for page faults,
    // allocator growth and cold caches, whichever variant it is.
    let warm = Config {
        measure: config.warmup,
        ..config
    };
    sample(Variant::Bare, warm).await?;
    sample(Variant::Tracked, warm).await?;

    let mut ratios = Vec::with_capacity(config.runs);
    for run in 1..=config.runs {
        // Alternate which goes first, so a drift in the machine's speed during a run (another
        // process, thermal throttling) does not always favour the same variant.
        let order = if run % 2 == 1 {
            [Variant::Bare, Variant::Tracked]
        } else {
            [Variant::Tracked, Variant::Bare]
        };
        let mut rates = [0.0; 2];
        for variant in order {
            let (round_trips, secs) = sample(variant, config).await?;
            #[allow(clippy::cast_precision_loss, reason = "round trips fit in f64 exactly")]
            let rate = round_trips as f64 / secs;
            println!(
                "gracedown-overhead sample run={run} variant={} round_trips={round_trips} secs={secs:.6} rate={rate:.1}",
                variant.name()
            );
            rates[usize::from(variant == Variant::Tracked)] = rate;
        }
        ratios.push(rates[1] / rates[0]);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "gracedown-overhead result runs={} ratio_median={:.4} ratio_min={:.4} ratio_max={:.4}",
        ratios.len(),
        median(&ratios),
        ratios.first().copied().unwrap_or(f64::NAN),
        ratios.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    let config = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}
