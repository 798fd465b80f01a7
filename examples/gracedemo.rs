//! The demo server every check drives: several HTTP and HTTPS ports and an admin port, upgraded
//! by `SIGUSR2`, stopped by `SIGTERM`/`SIGINT`, certificates reloaded by `SIGHUP`.
//!
//! ```text
//! cargo run --release --bin gracedemo
//! curl 'http://127.0.0.1:48567/sleep/?duration=20s' &   # a slow request
//! kill -USR2 $(curl -s http://127.0.0.1:48567/pid)      # upgrade while it runs
//! curl http://127.0.0.1:48567/                          # answered by the new pid
//! ```
//!
//! The slow request completes from the old process, which exits once it has.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gracehttp::{Body, Grace, Handler, Outcome, Server, StopTimeouts, Tls, full};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

const USAGE: &str = "\
gracedemo: HTTP and HTTPS servers that upgrade without dropping a request

Usage: gracedemo [options]

Options:
  --http ADDR          serve HTTP (HTTP/1.1 and h2c) on ADDR; repeatable
                       (default 127.0.0.1:48567 and 127.0.0.1:48568)
  --https ADDR         serve HTTPS (HTTP/1.1 and h2) on ADDR; repeatable; needs --cert and --key
  --cert PEM           certificate chain for --https
  --key PEM            private key for --https
  --admin ADDR         admin port with /healthz and /metrics (default 127.0.0.1:48569)
  --pid-file PATH      keep PATH naming the process that serves
  --stop-timeout DUR   how long connections get to finish when stopping (default 30s)
  --kill-timeout DUR   how long to wait after force-closing the rest (default 5s)
  --ready-timeout DUR  how long a new version gets to report ready (default 30s)
  -h, --help           print this help

Endpoints on every HTTP and HTTPS port:
  GET /                       hello from pid N
  GET /pid                    the pid
  GET /sleep/?duration=D      sleeps D, then says when it started and which pid answered

Signals: SIGUSR2 upgrades (the binary at the same path takes over), SIGTERM and SIGINT stop
(a second SIGINT forces), SIGHUP reloads the certificate and key.
DUR: a number with a unit, like 500ms, 2s or 1m.
";

const DEFAULT_HTTP: [&str; 2] = ["127.0.0.1:48567", "127.0.0.1:48568"];
const DEFAULT_ADMIN: &str = "127.0.0.1:48569";
/// The longest `/sleep` a client may ask for.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Config {
    http: Vec<SocketAddr>,
    https: Vec<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    admin: SocketAddr,
    pid_file: Option<PathBuf>,
    stop_timeout: Duration,
    kill_timeout: Duration,
    ready_timeout: Duration,
}

/// Parses the flags; `Ok(None)` for `--help`. Errors are one line naming the flag.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<Config>, String> {
    let mut http = Vec::new();
    let mut https = Vec::new();
    let mut cert = None;
    let mut key = None;
    let mut admin = None;
    let mut pid_file = None;
    let mut stop_timeout = StopTimeouts::default()
        .stop
        .unwrap_or(Duration::from_secs(30));
    let mut kill_timeout = StopTimeouts::default()
        .kill
        .unwrap_or(Duration::from_secs(5));
    let mut ready_timeout = gracenet::DEFAULT_READY_TIMEOUT;

    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let flag = flag
            .into_string()
            .map_err(|f| format!("unknown argument {:?}", f.to_string_lossy()))?;
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(OsString::from(v))),
            _ => (flag, None),
        };
        if !matches!(
            flag.as_str(),
            "--http"
                | "--https"
                | "--cert"
                | "--key"
                | "--admin"
                | "--pid-file"
                | "--stop-timeout"
                | "--kill-timeout"
                | "--ready-timeout"
        ) {
            return Err(format!("unknown flag {flag:?} (see --help)"));
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let utf8 = value.to_str().map(str::to_owned);
        let text = || {
            utf8.clone()
                .ok_or_else(|| format!("invalid value for {flag}: not UTF-8"))
        };
        let addr = || -> Result<SocketAddr, String> {
            let v = text()?;
            v.parse().map_err(|_| {
                format!("invalid value {v:?} for {flag}: expected an address like 127.0.0.1:8080")
            })
        };
        let duration = || -> Result<Duration, String> {
            let v = text()?;
            humantime::parse_duration(&v)
                .map_err(|e| format!("invalid value {v:?} for {flag}: {e}"))
        };
        let path = || -> Result<PathBuf, String> {
            if value.is_empty() {
                Err(format!("invalid value for {flag}: empty path"))
            } else {
                Ok(PathBuf::from(&value))
            }
        };
        match flag.as_str() {
            "--http" => http.push(addr()?),
            "--https" => https.push(addr()?),
            "--cert" => cert = Some(path()?),
            "--key" => key = Some(path()?),
            "--admin" => admin = Some(addr()?),
            "--pid-file" => pid_file = Some(path()?),
            "--stop-timeout" => stop_timeout = duration()?,
            "--kill-timeout" => kill_timeout = duration()?,
            _ => ready_timeout = duration()?,
        }
    }
    if !https.is_empty() && (cert.is_none() || key.is_none()) {
        return Err("--https needs --cert and --key".into());
    }
    if https.is_empty() && (cert.is_some() || key.is_some()) {
        return Err("--cert and --key are only used with --https".into());
    }
    if http.is_empty() {
        http = DEFAULT_HTTP.iter().filter_map(|a| a.parse().ok()).collect();
    }
    let admin = match admin {
        Some(a) => a,
        None => DEFAULT_ADMIN
            .parse()
            .map_err(|_| "invalid default admin address".to_owned())?,
    };
    Ok(Some(Config {
        http,
        https,
        cert,
        key,
        admin,
        pid_file,
        stop_timeout,
        kill_timeout,
        ready_timeout,
    }))
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The demo's endpoints, as in the original grace demo.
async fn demo(req: Request<Incoming>) -> Response<Body> {
    let pid = std::process::id();
    match req.uri().path() {
        "/" => text(StatusCode::OK, format!("hello from pid {pid}\n")),
        "/pid" => text(StatusCode::OK, format!("{pid}\n")),
        "/sleep" | "/sleep/" => {
            let raw = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("duration="))
                .unwrap_or("0s");
            let duration = match humantime::parse_duration(raw) {
                Ok(d) if d <= MAX_SLEEP => d,
                Ok(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("duration {raw:?} is longer than {MAX_SLEEP:?}\n"),
                    );
                }
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("invalid duration {raw:?}: {e}\n"),
                    );
                }
            };
            let started = humantime::format_rfc3339_millis(SystemTime::now());
            tokio::time::sleep(duration).await;
            text(
                StatusCode::OK,
                format!(
                    "started at {started} slept for {} from pid {pid}.\n",
                    humantime::format_duration(duration)
                ),
            )
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

async fn serve(
    config: Config,
    net: Arc<gracenet::Net>,
    tls: Option<Tls>,
) -> Result<Outcome, gracehttp::Error> {
    let handler = Handler::from_fn(demo);
    let mut grace = Grace::new(net).stop_timeouts(StopTimeouts {
        stop: Some(config.stop_timeout),
        kill: Some(config.kill_timeout),
    });
    for (i, addr) in config.http.iter().enumerate() {
        grace = grace.server(Server::tcp(format!("http-{i}"), *addr, handler.clone()));
    }
    if let Some(tls) = tls {
        for (i, addr) in config.https.iter().enumerate() {
            grace = grace
                .server(Server::tcp(format!("https-{i}"), *addr, handler.clone()).tls(tls.clone()));
        }
    }
    let admin = gracehttp::admin(grace.handle());
    grace
        .server(Server::tcp("admin", config.admin, admin))
        .run()
        .await
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("gracedemo: {message}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    // While the process has one thread: adopt the inherited sockets and clean the environment.
    let mut builder = gracenet::Net::builder().ready_timeout(Some(config.ready_timeout));
    if let Some(p) = &config.pid_file {
        builder = builder.pid_file(p);
    }
    let net = match builder.build() {
        Ok(net) => Arc::new(net),
        Err(e) => {
            eprintln!("gracedemo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) if !config.https.is_empty() => match Tls::from_pem_files(cert, key)
        {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("gracedemo: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gracedemo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, net, tls)) {
        Ok(Outcome::HandedOver { pid, .. }) => {
            tracing::info!(
                pid = std::process::id(),
                new_pid = pid,
                "exiting: handed over"
            );
            ExitCode::SUCCESS
        }
        Ok(_) => {
            tracing::info!(pid = std::process::id(), "exiting: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gracedemo: {e}");
            ExitCode::FAILURE
        }
    }
}
