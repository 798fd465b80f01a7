//! Helpers for tests that drive example servers as real processes: spawning with captured
//! output, guards that kill and reap, loopback clients, and bounded polling.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The bound of every wait in these tests: generous, so a slow machine does not fail them,
/// and finite, so a broken server does not hang them.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between two checks of a polled condition.
const POLL: Duration = Duration::from_millis(20);

/// Checks `check` until it returns `Some`, for at most `timeout`.
pub(crate) fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A process of the test: killed (with its whole process group, for the one the test
/// spawned) and reaped when dropped, however the test ends.
#[derive(Debug)]
pub(crate) struct Proc {
    pid: Pid,
    status: Option<WaitStatus>,
    /// Set for a process spawned by the test: it leads a process group that also holds every
    /// generation it starts.
    leads_group: bool,
}

impl Proc {
    /// Takes charge of a process the test did not spawn itself, such as a new generation
    /// started by a server. It is reaped here once its parent has exited: the test process is
    /// a child subreaper (see [`spawn`]).
    pub(crate) fn adopt(pid: u32) -> Proc {
        Proc {
            pid: Pid::from_raw(i32::try_from(pid).expect("pid fits in pid_t")),
            status: None,
            leads_group: false,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(self.pid, signal).unwrap_or_else(|e| panic!("kill({}, {signal}): {e}", self.pid));
    }

    /// One non-blocking look: the exit status once the process has ended. `ECHILD` means
    /// "not ours yet" (an adopted process whose parent still runs).
    fn poll(&mut self) -> Option<WaitStatus> {
        if self.status.is_none() {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD | Errno::EINTR) => {}
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    self.status = Some(status);
                }
                Ok(_) => {}
                Err(e) => panic!("waitpid({}): {e}", self.pid),
            }
        }
        self.status
    }

    /// Whether the process still runs (has not been reaped as ended).
    pub(crate) fn is_running(&mut self) -> bool {
        self.poll().is_none()
    }

    /// Waits for the process to end and returns its exit code, or why it has none: a death
    /// by signal, or no exit within [`TIMEOUT`].
    pub(crate) fn wait_exit(&mut self) -> Result<i32, String> {
        match wait_until(TIMEOUT, || self.poll()) {
            Some(WaitStatus::Exited(_, code)) => Ok(code),
            Some(other) => Err(format!("process {} ended abnormally: {other:?}", self.pid)),
            None => Err(format!(
                "process {} did not exit within {TIMEOUT:?}",
                self.pid
            )),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.leads_group {
            // Every generation and every helper script a server started is in this group.
            let _ = killpg(self.pid, Signal::SIGKILL);
        }
        if self.status.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            // ECHILD: an adopted process whose parent still runs; the group leader's guard
            // reaps it once it has been reparented here.
            let _ = wait_until(Duration::from_secs(2), || {
                match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => None,
                    _ => Some(()),
                }
            });
        }
        if self.leads_group {
            // The leader is gone, so every orphan of its group is our child now: reap them,
            // or they stay zombies (pid 1 of a container does not always reap).
            let group = Pid::from_raw(-self.pid.as_raw());
            let _ = wait_until(Duration::from_secs(2), || {
                match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
                    Err(Errno::ECHILD) => Some(()),
                    _ => None,
                }
            });
        }
    }
}

/// Text a process writes to a pipe, collected by a thread until the last writer closes it.
/// Every generation of a server shares its first process's stderr.
#[derive(Clone, Debug, Default)]
pub(crate) struct Output(Arc<(Mutex<Captured>, Condvar)>);

#[derive(Debug, Default)]
struct Captured {
    text: String,
    closed: bool,
}

impl Output {
    fn capture(mut pipe: impl Read + Send + 'static) -> Output {
        let output = Output::default();
        let shared = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = pipe.read(&mut buf).unwrap_or(0);
                let (lock, changed) = &*shared.0;
                let mut captured = lock.lock().unwrap_or_else(PoisonError::into_inner);
                if n == 0 {
                    captured.closed = true;
                    changed.notify_all();
                    return;
                }
                captured.text.push_str(&String::from_utf8_lossy(&buf[..n]));
                changed.notify_all();
            }
        });
        output
    }

    /// Everything captured so far.
    pub(crate) fn text(&self) -> String {
        self.0
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .text
            .clone()
    }

    /// Waits (at most [`TIMEOUT`]) until `done` holds for the captured state.
    fn wait(&self, mut done: impl FnMut(&Captured) -> bool) -> bool {
        let (lock, changed) = &*self.0;
        let deadline = Instant::now() + TIMEOUT;
        let mut captured = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !done(&captured) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            captured = changed
                .wait_timeout(captured, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Waits until `needle` has been written; panics with the whole output if it is not
    /// within [`TIMEOUT`].
    pub(crate) fn wait_for(&self, needle: &str) {
        assert!(
            self.wait(|c| c.text.contains(needle)),
            "{needle:?} not written within {TIMEOUT:?}; output:\n{}",
            self.text()
        );
    }

    /// Waits until every writer has closed the pipe and returns the whole output.
    pub(crate) fn complete(&self) -> String {
        assert!(
            self.wait(|c| c.closed),
            "output still open after {TIMEOUT:?}:\n{}",
            self.text()
        );
        self.text()
    }
}

/// A server process with its output.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) proc: Proc,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
}

/// Spawns `program` in a process group of its own, stdin closed and output captured.
///
/// It also makes this test process a child subreaper, so that a server's later generations,
/// orphaned when the generation that started them exits, are reparented here and can be
/// waited for (their exit status is what the tests check).
pub(crate) fn spawn<I, S>(program: impl AsRef<OsStr>, args: I) -> Server
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let program = program.as_ref();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.to_string_lossy()));
    let proc = Proc {
        pid: Pid::from_raw(i32::try_from(child.id()).expect("pid fits in pid_t")),
        status: None,
        leads_group: true,
    };
    let stdout = Output::capture(child.stdout.take().expect("piped stdout"));
    let stderr = Output::capture(child.stderr.take().expect("piped stderr"));
    // `std::process::Child` neither kills nor waits when dropped: `Proc` owns the process now.
    drop(child);
    Server {
        proc,
        stdout,
        stderr,
    }
}

/// A loopback address with a port that was free a moment ago.
pub(crate) fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// A line-based client of the echo protocol.
#[derive(Debug)]
pub(crate) struct Session<S: Read + Write> {
    stream: BufReader<S>,
}

impl Session<TcpStream> {
    pub(crate) fn tcp(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Session {
            stream: BufReader::new(stream),
        })
    }
}

impl Session<UnixStream> {
    pub(crate) fn unix(path: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Session {
            stream: BufReader::new(stream),
        })
    }
}

impl<S: Read + Write> Session<S> {
    /// Sends one line and returns the answer without its newline.
    pub(crate) fn send(&mut self, line: &str) -> io::Result<String> {
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

    /// Asks which process serves this connection.
    pub(crate) fn pid(&mut self) -> io::Result<u32> {
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

    /// Checks that the server closes the connection cleanly, with nothing more to read.
    pub(crate) fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "unexpected data before EOF: {rest:?}"),
            Err(e) => panic!("expected a clean close, got {e}"),
        }
    }
}

/// Opens new connections until one is served by a process for which `accept` holds, and
/// returns that pid; panics after [`TIMEOUT`].
pub(crate) fn wait_for_pid(addr: SocketAddr, accept: impl Fn(u32) -> bool) -> u32 {
    let mut last = None;
    let found = wait_until(TIMEOUT, || {
        let answer = Session::tcp(addr).and_then(|mut s| s.pid());
        let found = answer.as_ref().ok().copied().filter(|&pid| accept(pid));
        last = Some(answer);
        found
    });
    found.unwrap_or_else(|| panic!("no fitting pid on {addr} within {TIMEOUT:?}; last: {last:?}"))
}

/// Waits until the pid file at `path` names `pid`; panics after [`TIMEOUT`].
pub(crate) fn wait_for_pid_file(path: &Path, pid: u32) {
    let found = wait_until(TIMEOUT, || {
        let text = std::fs::read_to_string(path).ok()?;
        (text.trim() == pid.to_string()).then_some(())
    });
    assert!(
        found.is_some(),
        "{} does not name pid {pid} within {TIMEOUT:?}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

/// A directory of its own under the system temp dir, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // Short: unix socket paths are limited to 107 bytes.
        let path = std::env::temp_dir().join(format!("ge-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes an executable shell script named `name` and returns its path.
    pub(crate) fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Points the symlink `link` at `target`, atomically (a new link renamed over the old one),
/// the way a deploy swaps binaries.
pub(crate) fn point_link(link: &Path, target: &Path) {
    let tmp = link.with_extension("new-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("create symlink");
    std::fs::rename(&tmp, link).expect("rename symlink into place");
}

/// `name` looked up in `PATH`, like a shell would.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
