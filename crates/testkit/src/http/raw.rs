//! A hand-written HTTP/1.1 client on a tokio stream: nothing is hidden, retried or pooled, so a
//! test sees exactly what the server sends: the status line, the headers, and how the
//! connection ends (a clean EOF, a reset, or more bytes).
//!
//! It runs on the caller's runtime, so a test can drive it next to a server on the same
//! (current-thread, possibly paused-clock) runtime. Every operation is bounded by the client's
//! limit, [`TIMEOUT`] unless set otherwise, measured on the runtime's clock.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{Response, parse_response};
use crate::wait::{TIMEOUT, io_within};

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Ending {
    /// Bytes that came before the end (after the responses already read).
    pub extra: Vec<u8>,
    /// `Ok` for an EOF (the server closed cleanly), else the read error (a reset).
    pub how: Result<(), io::ErrorKind>,
}

impl Ending {
    /// Whether the server closed cleanly (FIN, no reset) with nothing more to read.
    pub fn is_clean(&self) -> bool {
        self.extra.is_empty() && self.how.is_ok()
    }
}

/// A raw HTTP/1.1 client on one connection.
#[derive(Debug)]
pub struct RawClient<S> {
    io: S,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
    limit: Duration,
}

impl RawClient<TcpStream> {
    /// Connects to `addr`.
    ///
    /// # Errors
    ///
    /// When the connection fails or takes longer than [`TIMEOUT`] (`TimedOut`).
    pub async fn connect(addr: SocketAddr) -> io::Result<RawClient<TcpStream>> {
        let io = io_within(TIMEOUT, "connect", TcpStream::connect(addr)).await?;
        Ok(RawClient::new(io))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// A client on a connected stream (a unix socket, a TLS stream).
    pub fn new(io: S) -> RawClient<S> {
        RawClient {
            io,
            buf: Vec::new(),
            limit: TIMEOUT,
        }
    }

    /// Bounds every later operation by `limit` instead of [`TIMEOUT`].
    pub fn with_limit(mut self, limit: Duration) -> RawClient<S> {
        self.limit = limit;
        self
    }

    /// Writes raw bytes.
    ///
    /// # Errors
    ///
    /// When the write fails (the server closed or reset) or does not finish in time.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        io_within(self.limit, "write", self.io.write_all(bytes)).await
    }

    /// Sends `GET path` (keep-alive, the HTTP/1.1 default).
    ///
    /// # Errors
    ///
    /// As [`RawClient::write`].
    pub async fn send_get(&mut self, path: &str) -> io::Result<()> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        self.write(req.as_bytes()).await
    }

    /// Sends `GET path` and reads the response.
    ///
    /// # Errors
    ///
    /// As [`RawClient::send_get`] and [`RawClient::response`].
    pub async fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send_get(path).await?;
        self.response().await
    }

    /// Reads one complete response.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` when the connection ends first (saying what had come), `InvalidData` for
    /// what is not a response [`parse_response`] reads, the read error (a reset), or `TimedOut`.
    pub async fn response(&mut self) -> io::Result<Response> {
        io_within(self.limit, "a response", async {
            loop {
                if let Some((response, used)) = parse_response(&self.buf)? {
                    self.buf.drain(..used);
                    return Ok(response);
                }
                self.fill().await?;
            }
        })
        .await
    }

    /// Reads exactly `n` bytes (after the responses read so far): what an upgraded connection
    /// sends, say.
    ///
    /// # Errors
    ///
    /// As [`RawClient::response`].
    pub async fn exactly(&mut self, n: usize) -> io::Result<Vec<u8>> {
        io_within(self.limit, "bytes", async {
            while self.buf.len() < n {
                self.fill().await?;
            }
            Ok(self.buf.drain(..n).collect())
        })
        .await
    }

    /// Reads until the connection ends, and tells how it did.
    ///
    /// # Errors
    ///
    /// `TimedOut` when it does not end in time (a read error is an [`Ending`], not an error).
    pub async fn end(&mut self) -> io::Result<Ending> {
        let mut extra = std::mem::take(&mut self.buf);
        let how = io_within(self.limit, "the end of the connection", async {
            let mut chunk = [0u8; 8192];
            loop {
                match self.io.read(&mut chunk).await {
                    Ok(0) => return Ok(Ok(())),
                    Ok(n) => extra.extend_from_slice(&chunk[..n]),
                    Err(e) => return Ok(Err(e.kind())),
                }
            }
        })
        .await?;
        Ok(Ending { extra, how })
    }

    /// Checks that the server closes the connection cleanly (FIN, no reset) with nothing more
    /// to read.
    ///
    /// # Panics
    ///
    /// When it does not, or not in time: an assertion for tests.
    pub async fn assert_clean_eof(&mut self) {
        let ending = self
            .end()
            .await
            .unwrap_or_else(|e| panic!("expected a clean EOF: {e}"));
        assert!(
            ending.is_clean(),
            "expected a clean EOF, got {:?}; extra bytes: {:?}",
            ending.how,
            String::from_utf8_lossy(&ending.extra)
        );
    }

    /// Reads what the server sends next into the buffer; the end of the connection is an
    /// `UnexpectedEof` error that says what had come.
    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the connection ended in a response; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_responses_bytes_and_the_end() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut client = RawClient::new(client);
        client.send_get("/x").await.unwrap();
        let expected = b"GET /x HTTP/1.1\r\nhost: test\r\n\r\n";
        let mut request = [0u8; 31];
        server.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, expected);
        server
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\n\r\nping\n")
            .await
            .unwrap();
        assert_eq!(client.response().await.unwrap().status, 101);
        assert_eq!(client.exactly(5).await.unwrap(), b"ping\n");
        server.write_all(b"bye").await.unwrap();
        drop(server);
        let ending = client.end().await.unwrap();
        assert_eq!(
            ending,
            Ending {
                extra: b"bye".to_vec(),
                how: Ok(())
            }
        );
        assert!(!ending.is_clean());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_a_timeout_and_a_closed_one_an_eof() {
        let (client, server) = tokio::io::duplex(4096);
        let mut client = RawClient::new(client).with_limit(Duration::from_secs(1));
        let err = client.response().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(server);
        let err = client.response().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        client.assert_clean_eof().await;
    }
}
