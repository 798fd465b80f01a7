//! Processes a test starts or takes charge of, each killed and reaped by its guard on every
//! path, failure included.
//!
//! [`spawn`] starts a program in a process group of its own, its output captured, and makes the
//! test process a child subreaper: a server's later generations, orphaned when the generation
//! that started them exits, are reparented to the test, which waits for them (their exit status
//! is what many tests check) and reaps them. [`Proc::adopt`] takes charge of such a process, or
//! of a child the library under test started. Dropping the group leader's [`Proc`] kills the
//! whole group.
//!
//! These are test-only conveniences: they panic, with what they were doing, when the system
//! refuses.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::output::Output;
use crate::wait::{TIMEOUT, wait_until};

/// How long a guard waits for a process it killed to be reaped. SIGKILL cannot be caught, so
/// this is only ever reached by a process that is not (or not yet) this process's child.
const REAP_LIMIT: Duration = Duration::from_secs(2);

/// A process of the test: killed (with its whole process group, for one [`spawn`] started) and
/// reaped when dropped, however the test ends.
#[derive(Debug)]
pub struct Proc {
    pid: Pid,
    status: Option<WaitStatus>,
    /// Set for a process [`spawn`] started: it leads a process group that also holds every
    /// generation and helper it starts.
    leads_group: bool,
}

impl Proc {
    /// Takes charge of a process the test did not start through [`spawn`]: a child the library
    /// under test started, or a new generation started by a server (reaped here once its parent
    /// has exited: the test process is a child subreaper, see [`spawn`]).
    ///
    /// # Panics
    ///
    /// When `pid` is not a pid (over `i32::MAX`).
    pub fn adopt(pid: u32) -> Proc {
        Proc {
            pid: to_pid(pid),
            status: None,
            leads_group: false,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Sends `signal` to the process.
    ///
    /// # Panics
    ///
    /// When the signal cannot be sent (the process is gone, say).
    pub fn signal(&self, signal: Signal) {
        kill(self.pid, signal).unwrap_or_else(|e| panic!("kill({}, {signal}): {e}", self.pid));
    }

    /// One non-blocking look: the exit status once the process has ended. `ECHILD` means "not
    /// ours yet" (an adopted process whose parent still runs).
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
    pub fn is_running(&mut self) -> bool {
        self.poll().is_none()
    }

    /// Waits (at most [`TIMEOUT`]) for the process to end and returns its exit code, or why it
    /// has none: a death by signal, or no exit in time.
    ///
    /// # Errors
    ///
    /// A description of the abnormal end, for the test's panic message.
    pub fn wait_exit(&mut self) -> Result<i32, String> {
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
        // A process that has ended is only reaped, not signalled: its zombie holds the pid, but
        // once it is reaped the pid may name another process.
        if self.status.is_none()
            && !matches!(
                waitpid(self.pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
            )
        {
            let _ = kill(self.pid, Signal::SIGKILL);
            // ECHILD: an adopted process whose parent still runs; the group leader's guard
            // reaps it once it has been reparented here.
            let _ = wait_until(REAP_LIMIT, || {
                match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => None,
                    _ => Some(()),
                }
            });
        }
        if self.leads_group {
            // The leader is gone, so every orphan of its group is our child now: reap them, or
            // they stay zombies (pid 1 of a container does not always reap).
            let group = Pid::from_raw(-self.pid.as_raw());
            let _ = wait_until(REAP_LIMIT, || {
                match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
                    Err(Errno::ECHILD) => Some(()),
                    _ => None,
                }
            });
        }
    }
}

fn to_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or_else(|_| panic!("{pid} is not a pid")))
}

/// A process [`spawn`] started, with its output.
#[derive(Debug)]
pub struct Spawned {
    /// The process; it leads its own process group.
    pub proc: Proc,
    /// Its stdout, shared with every process it starts.
    pub stdout: Output,
    /// Its stderr, shared with every process it starts.
    pub stderr: Output,
}

/// How a process [`Spawned::finish`] waited for ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code.
    pub code: i32,
    /// All it wrote to stdout.
    pub stdout: String,
    /// All it wrote to stderr.
    pub stderr: String,
}

impl Spawned {
    /// Waits for the process to exit and for its output to close (each at most [`TIMEOUT`]),
    /// and returns the exit code and all it wrote.
    ///
    /// # Panics
    ///
    /// With stderr, when the process does not exit in time or dies by a signal; when its
    /// output stays open (a process it started still holds it).
    pub fn finish(mut self) -> Finished {
        let code = self
            .proc
            .wait_exit()
            .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", self.stderr.text()));
        Finished {
            code,
            stdout: self.stdout.complete(),
            stderr: self.stderr.complete(),
        }
    }
}

/// Starts `program` with `args` (see [`spawn_command`]).
///
/// # Panics
///
/// See [`spawn_command`].
pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I) -> Spawned
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    spawn_command(Command::new(program).args(args))
}

/// Starts `command` in a process group of its own, stdin closed and stdout and stderr captured
/// (whatever `command` said about them), after making this process a child subreaper, so that
/// the processes it starts stay this process's to wait for and reap.
///
/// # Panics
///
/// When this process cannot become a subreaper, or `command` cannot be started.
pub fn spawn_command(command: &mut Command) -> Spawned {
    become_subreaper().unwrap_or_else(|e| panic!("PR_SET_CHILD_SUBREAPER: {e}"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let proc = Proc {
        pid: to_pid(child.id()),
        status: None,
        leads_group: true,
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        panic!("the output of {command:?} was piped, yet it has none");
    };
    let (stdout, stderr) = (Output::capture(stdout), Output::capture(stderr));
    // `std::process::Child` neither kills nor waits when dropped: `Proc` owns the process now.
    drop(child);
    Spawned {
        proc,
        stdout,
        stderr,
    }
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`): a
/// process whose parent exits is reparented here rather than to init, so that this process can
/// wait for it.
///
/// # Errors
///
/// When the kernel refuses.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Whether `pid` is no child of this process any more: reaped, not a zombie waiting to be.
pub fn is_reaped(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    matches!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Err(Errno::ECHILD)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_process_is_waited_for_with_its_output() {
        let done = spawn("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"]).finish();
        assert_eq!(
            (done.code, done.stdout.as_str(), done.stderr.as_str()),
            (3, "out\n", "err\n")
        );
    }

    #[test]
    fn dropping_the_leader_kills_and_reaps_its_whole_group() {
        let spawned = spawn("/bin/sh", ["-c", "sleep 60 & echo $!; wait"]);
        let leader = spawned.proc.pid();
        spawned.stdout.wait_for("\n");
        let helper: u32 = spawned.stdout.text().trim().parse().unwrap();
        drop(spawned);
        assert!(is_reaped(leader));
        assert!(is_reaped(helper));
        assert!(!std::path::Path::new(&format!("/proc/{helper}")).exists());
    }

    #[test]
    fn an_adopted_child_is_killed_and_reaped() {
        // A child of this process, as the library under test starts them; the guard reaps it.
        #[allow(clippy::zombie_processes, reason = "the guard adopting it reaps it")]
        let pid = Command::new("sleep").arg("60").spawn().unwrap().id();
        let mut adopted = Proc::adopt(pid);
        assert!(adopted.is_running());
        drop(adopted);
        assert!(is_reaped(pid));
    }
}
