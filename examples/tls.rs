//! An HTTPS server whose certificate is reloaded by `SIGHUP`, and a program that acts on
//! gracehttp's lifecycle events.
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
//!     -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
//!     -keyout key.pem -out cert.pem
//! cargo run -p grace-examples --bin tls -- --cert cert.pem --key key.pem
//! curl --cacert cert.pem https://localhost:48573/
//! kill -HUP $(curl -s --cacert cert.pem https://localhost:48573/pid)    # reload cert.pem, key.pem
//! ```
//!
//! The certificate and key are read at start, so a bad file stops the program before it
//! serves. `SIGHUP` reads them again: new handshakes get the new certificate, open connections
//! keep theirs, and a reload that fails (a missing file, a key that does not match) keeps the
//! old certificate and the server serving. `SIGUSR2` upgrades, `SIGTERM`/`SIGINT` stop.
//!
//! gracehttp logs every lifecycle event itself; this program also receives them from
//! `Handle::subscribe()`, prints one line per event on stdout (what a deploy script would read),
//! and counts the successful reloads, which `GET /` reports.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gracehttp::{Body, Event, Grace, Handler, Outcome, Server, Tls, full};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::broadcast;

const USAGE: &str = "\
tls: an HTTPS server whose certificate SIGHUP reloads

Usage: tls --cert PEM --key PEM [--https ADDR] [--admin ADDR]

Options:
  --cert PEM     certificate chain, leaf first
  --key PEM      private key (PKCS#8, PKCS#1 or SEC1)
  --https ADDR   serve HTTPS (HTTP/1.1 and h2) on ADDR (default 127.0.0.1:48573)
  --admin ADDR   admin port with /healthz and /metrics (default 127.0.0.1:48574)
  -h, --help     print this help

Routes: GET / (hello, and how often the certificate was reloaded), GET /pid.
Signals: SIGHUP reloads the certificate and key, SIGUSR2 upgrades, SIGTERM and SIGINT stop.
";

const DEFAULT_HTTPS: &str = "127.0.0.1:48573";
const DEFAULT_ADMIN: &str = "127.0.0.1:48574";

struct Config {
    https: SocketAddr,
    admin: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
}

/// Parses the flags; `Ok(None)` for `--help`. Errors are one line naming the flag.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<Config>, String> {
    let addr = |flag: &str, v: &OsString| -> Result<SocketAddr, String> {
        let text = v
            .to_str()
            .ok_or_else(|| format!("invalid value for {flag}: not UTF-8"))?;
        text.parse().map_err(|_| {
            format!("invalid value {text:?} for {flag}: expected an address like {DEFAULT_HTTPS}")
        })
    };
    let path = |flag: &str, v: OsString| -> Result<PathBuf, String> {
        if v.is_empty() {
            Err(format!("invalid value for {flag}: empty path"))
        } else {
            Ok(PathBuf::from(v))
        }
    };
    let mut https = addr("--https", &DEFAULT_HTTPS.into())?;
    let mut admin = addr("--admin", &DEFAULT_ADMIN.into())?;
    let (mut cert, mut key) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("unexpected argument {a:?}"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(OsString::from(v))),
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if !matches!(flag.as_str(), "--https" | "--admin" | "--cert" | "--key") {
            return Err(format!("unknown argument {flag:?} (see --help)"));
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--https" => https = addr(&flag, &value)?,
            "--admin" => admin = addr(&flag, &value)?,
            "--cert" => cert = Some(path(&flag, value)?),
            _ => key = Some(path(&flag, value)?),
        }
    }
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(Config {
            https,
            admin,
            cert,
            key,
        })),
        _ => Err("--cert and --key are required (see --help)".to_owned()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res
}

fn handler(reloads: Arc<AtomicU64>) -> Handler {
    Handler::from_fn(move |req: Request<Incoming>| {
        let reloads = reloads.load(Ordering::Relaxed);
        async move {
            let pid = std::process::id();
            match req.uri().path() {
                "/" => text(
                    StatusCode::OK,
                    format!(
                        "hello over {:?} from pid {pid}; certificate reloaded {reloads} time(s)\n",
                        req.version()
                    ),
                ),
                "/pid" => text(StatusCode::OK, format!("{pid}\n")),
                _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
            }
        }
    })
}

/// One line per lifecycle event, on stdout; counts the certificate reloads.
async fn watch(mut events: broadcast::Receiver<Event>, reloads: Arc<AtomicU64>) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            // Events are an offer: a slow receiver misses some, and says so.
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                println!("event: {missed} event(s) missed");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match event {
            Event::Ready { pid, generation } => {
                println!("event: ready pid={pid} generation={generation}")
            }
            Event::TlsReloaded { server } => {
                let n = reloads.fetch_add(1, Ordering::Relaxed) + 1;
                println!("event: certificate reloaded server={server} reloads={n}");
            }
            Event::TlsReloadFailed { server, reason } => {
                println!(
                    "event: certificate reload failed server={server}, the old one stays: {reason}"
                );
            }
            Event::UpgradeStarted => println!("event: upgrade started"),
            Event::UpgradeRefused => println!("event: upgrade refused, one is in progress"),
            Event::UpgradeFailed { reason } => {
                println!("event: upgrade failed, still serving: {reason}")
            }
            Event::UpgradeDone { pid } => println!("event: upgrade done, pid {pid} serves now"),
            Event::Draining => println!("event: draining"),
            // `Event` is non-exhaustive: later versions may say more.
            other => println!("event: {other:?}"),
        }
    }
}

async fn serve(
    config: Config,
    net: Arc<gracenet::Net>,
    tls: Tls,
) -> Result<Outcome, gracehttp::Error> {
    let reloads = Arc::new(AtomicU64::new(0));
    let server = Server::tcp("https-0", config.https, handler(Arc::clone(&reloads))).tls(tls);
    let grace = Grace::new(net).server(server);
    let handle = grace.handle();
    // Subscribed before `run`, so that `Ready` is seen too.
    tokio::spawn(watch(handle.subscribe(), reloads));
    grace
        .server(Server::tcp("admin", config.admin, gracehttp::admin(handle)))
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
            eprintln!("tls: {message}");
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
            eprintln!("tls: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Read now: a certificate that cannot be used stops the program before it listens.
    let tls = match Tls::from_pem_files(&config.cert, &config.key) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("tls: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tls: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, net, tls)) {
        Ok(outcome) => {
            tracing::info!(pid = std::process::id(), ?outcome, "exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tls: {e}");
            ExitCode::FAILURE
        }
    }
}
