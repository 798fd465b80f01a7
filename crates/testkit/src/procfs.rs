//! What the kernel shows of processes and descriptors: `/proc/PID/stat` (state, parent, process
//! group, whether it has exec'd, CPU time), whether a process exists, how many descriptors one
//! holds, and the inode that names a socket across processes.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

/// The fields of one `/proc/PID/stat` line that the tests use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The process id.
    pub pid: u32,
    /// The command name (at most 15 bytes of the executable's name).
    pub comm: String,
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    /// The parent's pid.
    pub ppid: u32,
    /// The process group.
    pub pgrp: u32,
    /// The kernel's `PF_*` flags of the process (see [`Stat::has_execed`]).
    pub flags: u32,
    /// CPU time in user mode, in clock ticks.
    pub utime: u64,
    /// CPU time in kernel mode, in clock ticks.
    pub stime: u64,
}

impl Stat {
    /// Whether the process has ended and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Whether the process has called `execve` since it was forked (the kernel clears
    /// `PF_FORKNOEXEC` only once the new image is in place). Until then it runs its parent's
    /// image, and `/proc/PID/exe` names the parent's executable: a child between `clone` and
    /// `execve` looks like its parent. Read the stat before the executable, so that "has exec'd"
    /// also holds for what is read after it.
    pub fn has_execed(&self) -> bool {
        /// `PF_FORKNOEXEC` in `include/linux/sched.h`: "forked but didn't exec".
        const PF_FORKNOEXEC: u32 = 0x40;
        self.flags & PF_FORKNOEXEC == 0
    }

    /// CPU time used, user and kernel, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Parses a `/proc/PID/stat` line. The command name may hold spaces and parentheses, so the
/// fields after it are found from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After the name: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt,
    // majflt, cmajflt, utime, stime, ...
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let number = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    Some(Stat {
        pid,
        comm,
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(number(1)?).ok()?,
        pgrp: u32::try_from(number(2)?).ok()?,
        flags: u32::try_from(number(6)?).ok()?,
        utime: number(11)?,
        stime: number(12)?,
    })
}

/// The stat of process `pid`; `None` if it does not exist (any more).
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process visible in `/proc`. A process that ends during the scan is left out.
pub fn processes() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

/// The processes in process group `pgid`, zombies included.
pub fn group_members(pgid: u32) -> Vec<Stat> {
    processes().into_iter().filter(|p| p.pgrp == pgid).collect()
}

/// Whether a process with this pid exists (a zombie counts).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The number of descriptors process `pid` holds open; `None` if it does not exist (or its
/// descriptors cannot be listed).
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The inode of a socket, which names it across processes: two descriptors, here and in a child,
/// refer to the same socket when their inodes are equal (it is the `N` of `socket:[N]` in
/// `/proc/PID/fd`).
///
/// # Errors
///
/// When `fstat` fails.
pub fn socket_inode(fd: &impl AsFd) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd.as_fd())?.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 4194560 10 0 0 0 31 5 0 0 20 0 1 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            (
                stat.pid,
                stat.comm.as_str(),
                stat.state,
                stat.ppid,
                stat.pgrp
            ),
            (42, "a (b) c", 'S', 7, 42)
        );
        assert_eq!((stat.utime, stat.stime, stat.cpu_ticks()), (31, 5, 36));
        assert!(!stat.is_zombie());
        assert!(stat.has_execed());
        let forked = "43 (x) Z 42 42 42 0 -1 4194368 0 0 0 0 0 0 0 0 20 0 1 0";
        let forked = parse_stat(forked).unwrap();
        assert!(forked.is_zombie());
        assert!(
            !forked.has_execed(),
            "PF_FORKNOEXEC (0x40) is set in 4194368"
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) Z 0 1").is_none(), "too few fields");
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let stat = stat(me).unwrap();
        assert_eq!(stat.pid, me);
        assert!(!stat.is_zombie());
        assert!(stat.has_execed(), "the test binary was exec'd");
        assert!(process_exists(me));
        assert!(fd_count(me).unwrap() >= 3);
        assert!(group_members(stat.pgrp).iter().any(|p| p.pid == me));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(&socket).unwrap();
        let shown = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|l| l.to_string_lossy() == format!("socket:[{inode}]"));
        assert!(
            shown,
            "socket:[{inode}] is not among this process's descriptors"
        );
    }
}
