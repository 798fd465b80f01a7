//! HTTP/1.1 responses as they come off the wire, parsed without I/O: the status line, the
//! headers in order, and a body framed by `Content-Length` or chunked encoding. The raw client
//! feeds it the bytes it reads; a program with its own transport can too.

use std::io;

/// An HTTP/1.1 response exactly as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers in order, names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the response says `Connection: close`.
    pub fn closes(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n == "connection" && v.to_ascii_lowercase().contains("close"))
    }
}

/// Parses the response at the start of `buf`: `Ok(Some((response, length)))` once it is
/// complete (`length` bytes of `buf`), `Ok(None)` while more bytes are needed.
///
/// # Errors
///
/// `InvalidData` for what is not an HTTP/1.1 response this parser reads: a bad status line,
/// header or chunk size, or a body framed by the end of the connection (neither a length nor
/// chunks, on a status that has a body).
pub fn parse_response(buf: &[u8]) -> io::Result<Option<(Response, usize)>> {
    let Some(head_len) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_len - 4]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let (Some(status), "HTTP/1.1") = (status, version) else {
        return Err(invalid(format!("status line {status_line:?}")));
    };
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &buf[head_len..];
    let body_len = if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("content-length {len:?}")))?;
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        response.body = body.to_vec();
        len
    } else if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        match dechunk(rest)? {
            Some((body, used)) => {
                response.body = body;
                used
            }
            None => return Ok(None),
        }
    } else if matches!(status, 100..=199 | 204 | 304) {
        0
    } else {
        return Err(invalid(format!(
            "a response without a length is not something this client reads: {response:?}"
        )));
    };
    Ok(Some((response, head_len + body_len)))
}

/// A chunked body at the start of `buf`, through its trailers: the body and the bytes it took,
/// or `None` while incomplete.
fn dechunk(buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_len) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let size_line = String::from_utf8_lossy(&buf[at..at + line_len]).into_owned();
        at += line_len + 2;
        let size = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers, if any, up to the empty line.
            loop {
                let Some(line_len) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += line_len + 2;
                if line_len == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        let Some(chunk) = buf.get(at..at + size + 2) else {
            return Ok(None);
        };
        if !chunk.ends_with(b"\r\n") {
            return Err(invalid("a chunk not followed by CRLF".to_owned()));
        }
        body.extend_from_slice(&chunk[..size]);
        at += size + 2;
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Where `needle` first starts in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(wire: &[u8]) -> (Response, usize) {
        // Every proper prefix is incomplete.
        for end in 0..wire.len() {
            assert!(
                parse_response(&wire[..end]).unwrap().is_none(),
                "complete after {end} of {} bytes",
                wire.len()
            );
        }
        parse_response(wire).unwrap().unwrap()
    }

    #[test]
    fn a_response_with_a_length_and_what_follows_it() {
        let mut wire =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec();
        let (res, used) = complete(&wire);
        assert_eq!(
            (res.status, res.text().as_str(), used),
            (200, "hello", wire.len())
        );
        assert_eq!(res.header("content-length"), Some("5"));
        assert!(res.closes());
        wire.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        let (_, used) = parse_response(&wire).unwrap().unwrap();
        let (next, _) = parse_response(&wire[used..]).unwrap().unwrap();
        assert_eq!((next.status, next.body.len()), (204, 0));
        assert!(!next.closes());
    }

    #[test]
    fn a_chunked_response_with_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: y\r\n\r\n";
        let (res, used) = complete(wire);
        assert_eq!((res.text().as_str(), used), ("hello world", wire.len()));
    }

    #[test]
    fn what_it_does_not_read_is_an_error() {
        for wire in [
            &b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let err = parse_response(wire).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{wire:?}");
        }
    }
}
