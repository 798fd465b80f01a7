//! A minimal blocking HTTP/1.1 client for the in-tree clients: one request at a time on a
//! `TcpStream`, with every failure sorted the way the report counts it (the kit's clients are
//! async and do not sort them). Deliberately small: the load itself comes from oha; these
//! clients need to see exactly what happens on one connection (which pid answered, whether a
//! reused connection was closed or reset). The response is parsed by the kit's
//! [`parse_response`].

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub(crate) use testkit::http::Response;
use testkit::http::{parse_response, pid_in_body};

/// How a request failed, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fail {
    /// The connection was refused.
    Refused,
    /// The connection was reset (ECONNRESET, EPIPE).
    Reset,
    /// No answer in time.
    Timeout,
    /// The server closed the connection cleanly before any byte of a response.
    Closed,
    /// The server closed the connection in the middle of a response, or sent garbage.
    Partial,
    /// Anything else.
    Other,
}

impl Fail {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Fail::Refused => "refused",
            Fail::Reset => "reset",
            Fail::Timeout => "timeout",
            Fail::Closed => "closed",
            Fail::Partial => "partial",
            Fail::Other => "other",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HttpError {
    pub(crate) fail: Fail,
    pub(crate) detail: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.fail.name(), self.detail)
    }
}

impl HttpError {
    fn new(fail: Fail, detail: impl Into<String>) -> HttpError {
        HttpError {
            fail,
            detail: detail.into(),
        }
    }

    fn io(what: &str, e: &io::Error) -> HttpError {
        let fail = match e.kind() {
            io::ErrorKind::ConnectionRefused => Fail::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Fail::Reset,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Fail::Timeout,
            _ => Fail::Other,
        };
        HttpError::new(fail, format!("{what}: {e}"))
    }
}

/// The pid a gracedemo body names (`/pid`: the number; `/` and `/sleep`: "... pid N").
pub(crate) fn pid(response: &Response) -> Option<u32> {
    pid_in_body(&response.text())
}

pub(crate) fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, HttpError> {
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| HttpError::io("connect", &e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends `GET path` on `stream` and reads the whole response, within `timeout`.
pub(crate) fn get_on(
    stream: &mut TcpStream,
    path: &str,
    close: bool,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let connection = if close { "close" } else { "keep-alive" };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| HttpError::io("send", &e))?;
    read_response(stream, Instant::now() + timeout)
}

/// `GET path` on a new connection, closed afterwards.
pub(crate) fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    let mut stream = connect(addr, timeout)?;
    get_on(&mut stream, path, true, timeout)
}

/// Whether the server has closed an idle connection (a clean FIN waiting to be read), without
/// sending anything. A reset shows as an error.
pub(crate) fn peer_closed(stream: &TcpStream) -> Result<bool, HttpError> {
    stream
        .set_nonblocking(true)
        .map_err(|e| HttpError::io("set_nonblocking", &e))?;
    let mut byte = [0u8; 1];
    let peeked = stream.peek(&mut byte);
    stream
        .set_nonblocking(false)
        .map_err(|e| HttpError::io("set_nonblocking", &e))?;
    match peeked {
        Ok(0) => Ok(true),
        Ok(_) => Err(HttpError::new(
            Fail::Partial,
            "bytes arrived on an idle connection",
        )),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(HttpError::io("idle connection", &e)),
    }
}

/// Reads one response (framed by `Content-Length` or chunks) before `deadline`; what the kit's
/// parser cannot read is `Partial`, as is a response cut short.
fn read_response(stream: &mut TcpStream, deadline: Instant) -> Result<Response, HttpError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        match parse_response(&buf) {
            Ok(Some((response, _))) => return Ok(response),
            Ok(None) if buf.len() > 1 << 20 => {
                return Err(HttpError::new(Fail::Partial, "a response over 1 MiB"));
            }
            Ok(None) => {}
            Err(e) => return Err(HttpError::new(Fail::Partial, e.to_string())),
        }
        let n = read_some(stream, &mut chunk, deadline, buf.is_empty())?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads at least one byte before `deadline`. End of stream is `Closed` when nothing of the
/// response has arrived yet (`first`), `Partial` otherwise.
fn read_some(
    stream: &mut TcpStream,
    chunk: &mut [u8],
    deadline: Instant,
    first: bool,
) -> Result<usize, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HttpError::new(
            Fail::Timeout,
            "no complete response in time",
        ));
    }
    stream
        .set_read_timeout(Some(left))
        .map_err(|e| HttpError::io("set_read_timeout", &e))?;
    match stream.read(chunk) {
        Ok(0) if first => Err(HttpError::new(
            Fail::Closed,
            "connection closed before any response byte",
        )),
        Ok(0) => Err(HttpError::new(
            Fail::Partial,
            "connection closed in the middle of the response",
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(HttpError::io("receive", &e)),
    }
}
