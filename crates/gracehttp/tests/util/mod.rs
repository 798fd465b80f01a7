//! Helpers for the in-process tests of gracehttp: the runner started on the test's own runtime
//! with no signal handlers, a gate that holds handlers until the test lets them go, and the
//! handler most tests serve. What is not gracehttp's (the raw HTTP/1.1 client that sees exactly
//! what the server sends, temp dirs, the metrics parser, bounded waits) is in `testkit`.
//!
//! Every wait is bounded by [`TIMEOUT`]; nothing sleeps to order events.
#![allow(
    dead_code,
    reason = "each test target uses a different part of the helpers"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use gracehttp::gracedown::Summary;
use gracehttp::gracenet::{Endpoint, Net};
use gracehttp::{Body, Event, Grace, Handle, Handler, Outcome, Server, full};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use testkit::http::RawClient;
use testkit::{LOCAL, TIMEOUT};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// A `Net` that ignores `LISTEN_*` variables: every socket is bound fresh.
pub(crate) fn net() -> Arc<Net> {
    Arc::new(
        Net::builder()
            .inherit(false)
            .build()
            .expect("a Net that inherits nothing"),
    )
}

/// A runner with no signal handlers at all, so that tests running in parallel in one process
/// never compete for a signal; they drive it through its [`Handle`].
pub(crate) fn grace(net: &Arc<Net>) -> Grace {
    Grace::new(Arc::clone(net))
        .stop_signals(false)
        .upgrade_signal(None)
        .reload_signal(None)
}

/// A runner serving on a task of the test's runtime.
pub(crate) struct Running {
    pub(crate) handle: Handle,
    pub(crate) events: broadcast::Receiver<Event>,
    endpoints: HashMap<String, Endpoint>,
    run: JoinHandle<Result<Outcome, gracehttp::Error>>,
}

/// Starts `grace` and waits until it reports [`Event::Ready`]: every server accepts then.
pub(crate) async fn start(grace: Grace, net: &Arc<Net>) -> Running {
    let handle = grace.handle();
    let mut events = handle.subscribe();
    let mut run = tokio::spawn(grace.run());
    let first = timeout(TIMEOUT, async {
        tokio::select! {
            event = events.recv() => event.expect("the event channel"),
            ended = &mut run => panic!("run() ended before it was ready: {ended:?}"),
        }
    })
    .await
    .expect("Ready in time");
    assert!(
        matches!(first, Event::Ready { generation: 0, .. }),
        "first event: {first:?}"
    );
    let endpoints = net
        .listeners()
        .into_iter()
        .filter_map(|l| Some((l.name, l.endpoint?)))
        .collect();
    Running {
        handle,
        events,
        endpoints,
        run,
    }
}

/// Starts a runner with one server, `web`, serving [`routes`] through a new [`Gate`] (returned
/// with it); `configure` sets the runner up first (timeouts, say).
pub(crate) async fn start_web(configure: impl FnOnce(Grace) -> Grace) -> (Running, Gate) {
    let net = net();
    let gate = Gate::new();
    let grace = configure(grace(&net)).server(Server::tcp("web", LOCAL, routes("web", &gate)));
    (start(grace, &net).await, gate)
}

impl Running {
    /// The address the TCP server `name` listens on.
    pub(crate) fn tcp(&self, name: &str) -> SocketAddr {
        match self.endpoints.get(name) {
            Some(Endpoint::Tcp(addr)) => *addr,
            other => panic!("server {name:?} has no TCP address: {other:?}"),
        }
    }

    /// `GET path` on a new connection to the TCP server `name`, read to its end.
    pub(crate) async fn get_once(&self, name: &str, path: &str) -> testkit::http::Response {
        let mut client = RawClient::connect(self.tcp(name))
            .await
            .unwrap_or_else(|e| panic!("connect to {name}: {e}"));
        client
            .get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on {name}: {e}"))
    }

    /// The next event.
    pub(crate) async fn event(&mut self) -> Event {
        timeout(TIMEOUT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the event channel")
    }

    /// Skips events until `want` comes.
    pub(crate) async fn wait_for(&mut self, want: &Event) {
        timeout(TIMEOUT, async {
            loop {
                if self.events.recv().await.expect("the event channel") == *want {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {want:?} in time"));
    }

    /// Stops, and returns once every connection task has seen that the drain started.
    ///
    /// `Draining` is sent just before the drain starts, in the same poll of the runner that
    /// starts it, which wakes every connection task. On the tests' current-thread runtime those
    /// tasks are queued by then, and one yield lets them run (and ask hyper to finish) before
    /// the test goes on; a handler released later then answers on a connection that already
    /// knows it drains.
    pub(crate) async fn stop_and_wait_draining(&mut self) {
        self.handle.stop();
        self.wait_for(&Event::Draining).await;
        tokio::task::yield_now().await;
    }

    /// How `run()` ended.
    pub(crate) async fn outcome(self) -> Outcome {
        timeout(TIMEOUT, self.run)
            .await
            .expect("run() returns in time")
            .expect("the run task")
            .expect("run() succeeds")
    }

    /// `run()` must have ended with [`Outcome::Stopped`]; how the drain went.
    pub(crate) async fn stopped(self) -> Summary {
        match self.outcome().await {
            Outcome::Stopped(drained) => drained,
            other => panic!("expected Stopped, got {other:?}"),
        }
    }
}

/// Checks how a drain ended: `(finished, forced, stuck)` connections (see `Summary`).
#[track_caller]
pub(crate) fn assert_drained(drained: &Summary, counts: (u64, u64, usize)) {
    assert_eq!(
        (drained.finished, drained.forced, drained.stuck),
        counts,
        "{drained:?}"
    );
}

/// Holds handlers until the test releases them, and tells the test when they arrive.
#[derive(Clone)]
pub(crate) struct Gate {
    entered: Arc<Semaphore>,
    open: Arc<Semaphore>,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            entered: Arc::new(Semaphore::new(0)),
            open: Arc::new(Semaphore::new(0)),
        }
    }

    /// In a handler: says it arrived, then waits until released.
    pub(crate) async fn pass(&self) {
        self.entered.add_permits(1);
        self.open
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }

    /// In a handler: says it arrived.
    pub(crate) fn arrive(&self) {
        self.entered.add_permits(1);
    }

    /// Waits until `n` more handlers arrived.
    pub(crate) async fn wait_entered(&self, n: u32) {
        timeout(TIMEOUT, self.entered.acquire_many(n))
            .await
            .expect("the handlers arrive in time")
            .expect("the gate is never closed")
            .forget();
    }

    /// Lets `n` handlers through.
    pub(crate) fn release(&self, n: usize) {
        self.open.add_permits(n);
    }
}

/// A text response.
pub(crate) fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res
}

/// The handler most tests serve: `/` answers `hello from NAME`, `/gate` passes `gate` first and
/// answers `NAME released`, `/never` never answers; anything else is 404.
pub(crate) fn routes(name: &'static str, gate: &Gate) -> Handler {
    let gate = gate.clone();
    Handler::from_fn(move |req: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            match req.uri().path() {
                "/" => text(StatusCode::OK, format!("hello from {name}\n")),
                "/gate" => {
                    gate.pass().await;
                    text(StatusCode::OK, format!("{name} released\n"))
                }
                "/never" => {
                    gate.arrive();
                    std::future::pending().await
                }
                _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
            }
        }
    })
}
