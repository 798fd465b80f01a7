//! A client of line protocols, blocking, over TCP or a unix socket: send a line, read the
//! answer's line. The workspace's line servers (the `echo` example, the `netchild` test child)
//! answer `pid` (netchild: any line) with `pid N`, the process that serves the connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::wait::TIMEOUT;

/// A line-based client on one connection; every read and write is bounded by [`TIMEOUT`].
#[derive(Debug)]
pub struct Session<S: Read + Write> {
    stream: BufReader<S>,
}

impl Session<TcpStream> {
    /// Connects to `addr` over TCP.
    ///
    /// # Errors
    ///
    /// When the connection fails or takes longer than [`TIMEOUT`].
    pub fn tcp(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Session::new(stream))
    }
}

impl Session<UnixStream> {
    /// Connects to the unix socket at `path`.
    ///
    /// # Errors
    ///
    /// When the connection fails.
    pub fn unix(path: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Session::new(stream))
    }
}

impl<S: Read + Write> Session<S> {
    /// A session on a connected stream, whose timeouts are the caller's to set.
    pub fn new(stream: S) -> Self {
        Session {
            stream: BufReader::new(stream),
        }
    }

    /// Sends `line` (a newline is added) and returns the answer without its newline.
    ///
    /// # Errors
    ///
    /// When writing or reading fails (a reset, a timeout), the connection ends before the
    /// answer (`UnexpectedEof`), or the answer ends without a newline (`InvalidData`).
    pub fn send(&mut self, line: &str) -> io::Result<String> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())?;
        let mut answer = String::new();
        if self.stream.read_line(&mut answer)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed instead of answering {line:?}"),
            ));
        }
        match answer.strip_suffix('\n') {
            Some(answer) => Ok(answer.to_owned()),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unterminated answer {answer:?}"),
            )),
        }
    }

    /// Asks which process serves this connection: sends `pid`, expects `pid N`.
    ///
    /// # Errors
    ///
    /// As [`Session::send`], and `InvalidData` for another answer.
    pub fn pid(&mut self) -> io::Result<u32> {
        let answer = self.send("pid")?;
        answer
            .strip_prefix("pid ")
            .and_then(|pid| pid.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected answer {answer:?}"),
                )
            })
    }

    /// Reads until the server closes the connection, and returns what came before the end.
    ///
    /// # Errors
    ///
    /// When reading fails: a reset rather than a clean close, or a timeout.
    pub fn rest(&mut self) -> io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest)?;
        Ok(rest)
    }

    /// Checks that the server closes the connection cleanly, with nothing more to read.
    ///
    /// # Panics
    ///
    /// When it does not: an assertion for tests.
    pub fn assert_eof(&mut self) {
        match self.rest() {
            Ok(rest) => assert!(rest.is_empty(), "unexpected data before EOF: {rest:?}"),
            Err(e) => panic!("expected a clean close, got {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Shutdown, TcpListener};

    use super::*;

    #[test]
    fn sends_lines_and_reads_answers_and_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut lines = BufReader::new(conn);
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            assert_eq!(line, "pid\n");
            lines.get_mut().write_all(b"pid 77\n").unwrap();
            line.clear();
            lines.read_line(&mut line).unwrap();
            lines.get_mut().write_all(line.as_bytes()).unwrap();
            // An answer cut short: no newline, then the end.
            line.clear();
            lines.read_line(&mut line).unwrap();
            lines.get_mut().write_all(b"cut").unwrap();
            lines.get_mut().shutdown(Shutdown::Write).unwrap();
        });
        let mut session = Session::tcp(addr).unwrap();
        assert_eq!(session.pid().unwrap(), 77);
        assert_eq!(session.send("hello").unwrap(), "hello");
        let err = session.send("again").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        session.assert_eof();
        server.join().unwrap();
    }
}
