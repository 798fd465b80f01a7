//! The yardstick for gracedemo's overhead: the same handler (`/`, `/pid`, `/sleep`) on a bare
//! hyper-util server, with no graceful restart, drain accounting, admin port or signals.
//! `cargo xtask bench` loads both alike and compares.
//!
//! ```text
//! cargo run --release --bin bare -- --http 127.0.0.1:48570
//! curl http://127.0.0.1:48570/
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const USAGE: &str = "\
bare: gracedemo's handler on a bare hyper-util server (HTTP/1.1 and h2c), for comparison

Usage: bare [--http ADDR]...

Options:
  --http ADDR   serve on ADDR; repeatable (default 127.0.0.1:48570)
  -h, --help    print this help
";

const DEFAULT_HTTP: &str = "127.0.0.1:48570";
/// The longest `/sleep` a client may ask for, as in gracedemo.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Vec<SocketAddr>>, String> {
    let mut addrs = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--http" => {
                let v = inline
                    .or_else(|| args.next())
                    .ok_or("--http needs a value")?;
                let addr = v.parse().map_err(|_| {
                    format!(
                        "invalid value {v:?} for --http: expected an address like 127.0.0.1:8080"
                    )
                })?;
                addrs.push(addr);
            }
            other => return Err(format!("unknown flag {other:?} (see --help)")),
        }
    }
    if addrs.is_empty() {
        addrs.push(
            DEFAULT_HTTP
                .parse()
                .map_err(|_| "invalid default address".to_owned())?,
        );
    }
    Ok(Some(addrs))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// gracedemo's endpoints, answered the same way.
async fn demo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let pid = std::process::id();
    Ok(match req.uri().path() {
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
                    return Ok(text(
                        StatusCode::BAD_REQUEST,
                        format!("duration {raw:?} is longer than {MAX_SLEEP:?}\n"),
                    ));
                }
                Err(e) => {
                    return Ok(text(
                        StatusCode::BAD_REQUEST,
                        format!("invalid duration {raw:?}: {e}\n"),
                    ));
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
    })
}

/// Accepts forever, one task per connection, HTTP/1.1 or h2c as the client speaks.
async fn serve(listener: tokio::net::TcpListener) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or similar: pause rather than spin.
                eprintln!("bare: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(demo);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> ExitCode {
    let addrs = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("bare: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for addr in addrs {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    eprintln!("bare: pid {} serving http://{addr}", std::process::id());
                    tasks.spawn(serve(l));
                }
                Err(e) => {
                    eprintln!("bare: cannot listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        // The accept loops never end; a signal's default action ends the process.
        while tasks.join_next().await.is_some() {}
        ExitCode::SUCCESS
    })
}
