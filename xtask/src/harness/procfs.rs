//! What /proc says about a process: state, parent and group, open descriptors (connections
//! told apart from the rest), resident memory, executable.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// One line of /proc/PID/stat, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: u32,
    pub(crate) comm: String,
    /// R, S, D, Z, ...
    pub(crate) state: char,
    pub(crate) ppid: u32,
    pub(crate) pgrp: u32,
}

impl ProcStat {
    pub(crate) fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses /proc/PID/stat; the command name may hold spaces and parentheses, so the fields
/// after it are found from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process visible in /proc.
pub(crate) fn processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

pub(crate) fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

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
    fn parses_stat_with_odd_command_names() {
        let s = parse_stat("42 (a (b) c) S 7 42 42 0 -1 4194560 0 0").unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.state, s.ppid, s.pgrp),
            (42, "a (b) c", 'S', 7, 42)
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) Z 0 1").unwrap().is_zombie());
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(stat(me).is_some_and(|s| !s.is_zombie()));
        assert!(fd_count(me).unwrap() >= 3);
        assert!(rss_kib(me).unwrap() > 0);
        let fds = fds(me).unwrap();
        assert!(fds.base() <= fds.total);
    }
}
