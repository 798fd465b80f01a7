//! Counts stay exact with thousands of real loopback connections opened and closed at random.

mod util;

use gracedown::{Drain, StopTimeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use util::within;

/// Concurrent connections at the peak: 10,000 descriptors with both ends in this process,
/// within the 20,000 the machine allows.
const PEAK: usize = 5_000;
/// Connections opened at once while ramping up: below the listen backlog tokio (like std)
/// asks for, 128, so no SYN is dropped and retried a second later.
const WAVE: usize = 100;
/// Random steps after the ramp-up.
const STEPS: usize = 6_000;

/// A deterministic xorshift, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One request byte: `p` ping, `i` mark idle, `b` mark busy; each answered with the same byte
/// once done, so the client knows the server did it.
async fn request(client: &mut TcpStream, command: u8) {
    client.write_all(&[command]).await.expect("write");
    let mut reply = [0u8; 1];
    client.read_exact(&mut reply).await.expect("read");
    assert_eq!(reply[0], command);
}

async fn open(addr: std::net::SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(addr).await.expect("connect");
    // Answered only by a task serving a tracked connection: once it returns, the connection is
    // counted.
    request(&mut client, b'p').await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_stay_exact_with_thousands_of_connections() {
    let drain = Drain::new();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut listener = drain.track_listener(tcp);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<()>();
    let server = tokio::spawn(async move {
        while let Some(accepted) = listener.accept().await {
            let (conn, _) = accepted.expect("accept");
            let ended_tx = ended_tx.clone();
            conn.spawn(move |mut conn| async move {
                let mut command = [0u8; 1];
                loop {
                    let drained = conn.drained();
                    tokio::select! {
                        read = conn.read(&mut command) => match read {
                            Ok(1) => {}
                            _ => break,
                        },
                        () = drained => break,
                    }
                    match command[0] {
                        b'i' => conn.mark_idle(),
                        b'b' => assert!(conn.mark_busy()),
                        _ => {}
                    }
                    if conn.write_all(&command).await.is_err() {
                        break;
                    }
                }
                // Reported after the connection is dropped, so its count is already settled.
                drop(conn);
                let _ = ended_tx.send(());
            });
        }
    });

    // Ramp up to the peak, a wave at a time.
    let mut open_conns: Vec<(TcpStream, bool)> = Vec::with_capacity(PEAK);
    while open_conns.len() < PEAK {
        let mut wave = JoinSet::new();
        for _ in 0..WAVE.min(PEAK - open_conns.len()) {
            wave.spawn(open(addr));
        }
        while let Some(client) = within("a wave of connections", wave.join_next()).await {
            open_conns.push((client.unwrap(), false));
        }
    }
    let counters = drain.counters();
    assert_eq!(
        (counters.active, counters.accepted, counters.idle),
        (PEAK, PEAK as u64, 0)
    );

    // Random steps: close one, open one, mark one idle or busy.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut opened = PEAK as u64;
    let mut closed = 0u64;
    within("the random steps", async {
        for _ in 0..STEPS {
            match rng.below(4) {
                0 | 1 if !open_conns.is_empty() => {
                    let victim = rng.below(open_conns.len());
                    drop(open_conns.swap_remove(victim));
                    closed += 1;
                }
                2 if open_conns.len() < PEAK => {
                    open_conns.push((open(addr).await, false));
                    opened += 1;
                }
                _ if !open_conns.is_empty() => {
                    let which = rng.below(open_conns.len());
                    let (client, idle) = &mut open_conns[which];
                    request(client, if *idle { b'b' } else { b'i' }).await;
                    *idle = !*idle;
                }
                _ => {}
            }
        }
    })
    .await;
    for _ in 0..closed {
        within("a closed connection to end", ended_rx.recv())
            .await
            .unwrap();
    }
    let idle = open_conns.iter().filter(|(_, idle)| *idle).count();
    let counters = drain.counters();
    assert_eq!(counters.active, open_conns.len());
    assert_eq!(counters.idle, idle);
    assert_eq!(counters.accepted, opened);
    assert_eq!(counters.finished, closed);
    assert_eq!(counters.forced, 0);
    assert!(
        idle > 0 && closed > 0 && opened > PEAK as u64,
        "the steps did each thing"
    );

    // Drain: idle ones are closed at once, busy ones see the drain signal and close.
    let summary = within("the shutdown", drain.shutdown(StopTimeouts::default())).await;
    assert_eq!(
        (summary.finished, summary.forced, summary.stuck),
        (open_conns.len() as u64, 0, 0)
    );
    within("the accept loop", server).await.unwrap();
    let counters = drain.counters();
    assert_eq!((counters.active, counters.idle, counters.forced), (0, 0, 0));
    assert_eq!((counters.accepted, counters.finished), (opened, opened));
}
