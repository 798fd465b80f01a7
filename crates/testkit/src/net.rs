//! Loopback addresses for the servers under test: every test listens and connects on loopback
//! only.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

/// A loopback address with a port the kernel picks when it is bound.
pub const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// `n` loopback addresses, with distinct ports that were free a moment ago (all picked while
/// the others were still held). A server binds them a moment later: a race that other programs
/// rarely win on a test machine.
///
/// # Errors
///
/// When a port cannot be bound.
pub fn free_addrs(n: usize) -> io::Result<Vec<SocketAddr>> {
    let held = (0..n)
        .map(|_| TcpListener::bind(LOCAL))
        .collect::<io::Result<Vec<_>>>()?;
    held.iter().map(TcpListener::local_addr).collect()
}

/// One loopback address with a port that was free a moment ago (see [`free_addrs`]).
///
/// # Panics
///
/// When no port can be bound on loopback: a test-only convenience.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind(LOCAL)
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addresses_are_loopback_and_distinct() {
        let addrs = free_addrs(3).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() != 0));
        assert!(addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2]);
        assert!(free_addr().ip().is_loopback());
    }
}
