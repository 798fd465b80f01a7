//! What /proc says about a process beyond what the test kit reads (`testkit::procfs`: state,
//! parent, group, descriptor count): resident memory, the executable, and open descriptors with
//! TCP connections told apart from the rest.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Resident memory (VmRSS) in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The executable `pid` runs (its parent's, until it has exec'd: see `Stat::has_execed`).
pub(crate) fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// A process's open descriptors, split into TCP connections and the rest (listening sockets,
/// pipes, epoll, files...). The rest is what should not change from one generation to the next
/// under the same load; the connections come and go with the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fds {
    pub(crate) total: usize,
    pub(crate) connections: usize,
}

impl Fds {
    pub(crate) fn base(&self) -> usize {
        self.total - self.connections
    }
}

pub(crate) fn fds(pid: u32) -> Option<Fds> {
    let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| {
            let link = std::fs::read_link(e.ok()?.path()).ok()?;
            Some(link.to_string_lossy().into_owned())
        })
        .collect();
    let sockets: BTreeSet<u64> = links
        .iter()
        .filter_map(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    // Read the tables after the links: a connection closed in between is no longer in them
    // and counts as a connection (not as a leak).
    let not_connections = not_tcp_connections(&sockets);
    let connections = sockets.len() - not_connections;
    Some(Fds {
        total: links.len(),
        connections,
    })
}

/// How many of `sockets` (inodes) are listening TCP sockets or unix sockets, from
/// /proc/net/{tcp,tcp6,unix}. One pass over each table, looking only at the columns needed:
/// after a scenario with a new connection per request the TCP tables hold tens of thousands
/// of TIME_WAIT lines.
fn not_tcp_connections(sockets: &BTreeSet<u64>) -> usize {
    let mut found = BTreeSet::new();
    for (table, tcp) in [
        ("/proc/net/tcp", true),
        ("/proc/net/tcp6", true),
        ("/proc/net/unix", false),
    ] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_ascii_whitespace();
            // tcp: sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            // unix: Num RefCount Protocol Flags Type St Inode Path
            let (state, inode) = if tcp {
                (fields.nth(3), fields.nth(5))
            } else {
                (None, fields.nth(6))
            };
            if tcp && state != Some("0A") {
                continue;
            }
            if let Some(inode) = inode.and_then(|i| i.parse::<u64>().ok()) {
                if sockets.contains(&inode) {
                    found.insert(inode);
                }
            }
        }
    }
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(exe(me).is_some_and(|e| e.is_absolute()));
        let fds = fds(me).unwrap();
        assert!(fds.base() <= fds.total);
    }
}
