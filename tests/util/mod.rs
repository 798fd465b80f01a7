//! Helpers shared by the integration tests: temporary directories, process reapers, bounded
//! waits. Every helper cleans up after itself, on failure too.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// A directory removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("grace-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Kills (SIGKILL) and reaps a child process on drop, unless it was reaped already.
#[derive(Debug)]
pub struct Reaper(pub u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0 as i32);
        let _ = kill(pid, Signal::SIGKILL);
        while let Err(Errno::EINTR) = waitpid(pid, None) {}
    }
}

/// Whether `pid` is no child of ours any more: reaped, not a zombie waiting for us.
pub fn is_reaped(pid: u32) -> bool {
    matches!(
        waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)),
        Err(Errno::ECHILD)
    )
}

/// Whether the process exists at all (alive or zombie).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The number of open descriptors of this process.
pub fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .map(Iterator::count)
        .unwrap_or(0)
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `line` and reads one line back, with timeouts on both.
pub fn exchange<S: Read + Write>(stream: S, line: &str) -> std::io::Result<String> {
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(line.as_bytes())?;
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    Ok(answer)
}

/// The report a `netchild` wrote to `dir` for `pid`.
pub fn child_report(dir: &Path, pid: u32) -> Option<String> {
    fs::read_to_string(dir.join(format!("{pid}.report"))).ok()
}

/// The `inode=` values of the `listener` lines of a netchild report, in order.
pub fn report_inodes(report: &str) -> Vec<u64> {
    report
        .lines()
        .filter(|l| l.starts_with("listener "))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("inode=")))
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// Finds a program in `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Owns a `std::process::Child`; on drop, kills and reaps it unless it was already waited for.
#[derive(Debug)]
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // `try_wait` remembers a status already collected, so a reaped child is never signalled
        // (its pid may belong to another process by now).
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The inode of a socket, which names it across processes: two descriptors, here and in a
/// child, refer to the same socket when their inodes are equal.
pub fn socket_inode(fd: &impl std::os::fd::AsFd) -> std::io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd.as_fd())?.st_ino)
}
