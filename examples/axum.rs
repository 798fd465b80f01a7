//! An axum `Router` served by gracehttp, WebSocket included, with an admin port.
//!
//! ```text
//! cargo run -p grace-examples --bin axum
//! curl http://127.0.0.1:48571/                  # hello from axum, pid N
//! websocat ws://127.0.0.1:48571/ws              # every message comes back
//! kill -USR2 $(curl -s http://127.0.0.1:48571/pid)
//! ```
//!
//! The router is a tower service, so it runs as it is: `Handler::tower(router)`. axum's
//! extractors see what gracehttp puts in each request, hyper's upgrade handle (for
//! `WebSocketUpgrade`) and the connection's `gracedown::ConnHandle`.
//!
//! A WebSocket outlives the request that opened it: it is counted as an open connection, and
//! the drain (after an upgrade or a stop) waits for it. The echo task watches
//! `ConnHandle::drained` and, when the drain starts, sends a close frame with code 1001 (going
//! away) and ends once the client answered it; clients reconnect, and reach the new process.
//! A client that does not answer is force-closed at the stop timeout.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use gracehttp::gracedown::ConnHandle;
use gracehttp::{Grace, Handler, Outcome, Server};

const USAGE: &str = "\
axum: an axum Router (with a WebSocket echo) served by gracehttp

Usage: axum [--http ADDR] [--admin ADDR]

Options:
  --http ADDR    serve the router on ADDR (default 127.0.0.1:48571)
  --admin ADDR   admin port with /healthz and /metrics (default 127.0.0.1:48572)
  -h, --help     print this help

Routes: GET / (hello), GET /pid, GET /ws (WebSocket echo).
Signals: SIGUSR2 upgrades, SIGTERM and SIGINT stop.
";

const DEFAULT_HTTP: &str = "127.0.0.1:48571";
const DEFAULT_ADMIN: &str = "127.0.0.1:48572";
/// How long a WebSocket client gets to answer the close frame sent at the drain.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(5);

struct Config {
    http: SocketAddr,
    admin: SocketAddr,
}

/// Parses the flags; `Ok(None)` for `--help`. Errors are one line naming the flag.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<Config>, String> {
    let parse = |flag: &str, v: &str| -> Result<SocketAddr, String> {
        v.parse().map_err(|_| {
            format!("invalid value {v:?} for {flag}: expected an address like {DEFAULT_HTTP}")
        })
    };
    let mut config = Config {
        http: parse("--http", DEFAULT_HTTP)?,
        admin: parse("--admin", DEFAULT_ADMIN)?,
    };
    let mut args = args.into_iter().map(|a| {
        a.into_string()
            .map_err(|a| format!("unexpected argument {a:?}"))
    });
    while let Some(flag) = args.next() {
        let flag = flag?;
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (flag, None),
        };
        let mut value = || {
            inline
                .clone()
                .map(Ok)
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--http" => config.http = parse(&flag, &value()??)?,
            "--admin" => config.admin = parse(&flag, &value()??)?,
            _ => return Err(format!("unknown argument {flag:?} (see --help)")),
        }
    }
    Ok(Some(config))
}

fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { format!("hello from axum, pid {}\n", std::process::id()) }),
        )
        .route(
            "/pid",
            get(|| async { format!("{}\n", std::process::id()) }),
        )
        .route("/ws", get(ws))
}

/// `GET /ws`: upgrades to a WebSocket that echoes every message.
async fn ws(upgrade: WebSocketUpgrade, Extension(conn): Extension<ConnHandle>) -> Response {
    upgrade.on_upgrade(move |socket| echo(socket, conn))
}

async fn echo(mut socket: WebSocket, conn: ConnHandle) {
    let drained = conn.drained();
    tokio::pin!(drained);
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                // tungstenite answers pings by itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            },
            () = &mut drained => break,
        }
    }
    // The drain started: say goodbye, and wait (a little) for the client's close frame, so
    // the connection ends cleanly rather than with a reset.
    let goodbye = CloseFrame {
        code: close_code::AWAY,
        reason: "server restarting".into(),
    };
    if socket.send(Message::Close(Some(goodbye))).await.is_err() {
        return;
    }
    let reply = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, reply).await;
}

async fn serve(config: Config, net: Arc<gracenet::Net>) -> Result<Outcome, gracehttp::Error> {
    let grace =
        Grace::new(net).server(Server::tcp("http-0", config.http, Handler::tower(router())));
    let admin = gracehttp::admin(grace.handle());
    grace
        .server(Server::tcp("admin", config.admin, admin))
        .run()
        .await
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("axum: {message}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    // While the process has one thread: adopt the inherited sockets and clean the environment.
    let net = match gracenet::Net::from_env() {
        Ok(net) => Arc::new(net),
        Err(e) => {
            eprintln!("axum: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("axum: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, net)) {
        Ok(outcome) => {
            tracing::info!(pid = std::process::id(), ?outcome, "exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("axum: {e}");
            ExitCode::FAILURE
        }
    }
}
