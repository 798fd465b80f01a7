//! Free loopback ports for the servers under test.

use std::net::TcpListener;

use anyhow::{Context, Result};

/// `n` free loopback ports, all distinct. They are free when picked; the server binds them a
/// moment later (a race other programs rarely win on a test machine).
pub(crate) fn free(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("picking free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<u16>>>()
        .context("reading a picked port")
}
