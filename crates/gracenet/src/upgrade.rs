//! The upgrade: one new process at a time, started with every socket, waited for, and
//! committed to (systemd told, the pid file renamed) once it reports ready.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::net::{Shared, State};
use crate::spawn::{self, Spawned};
use crate::{Error, Net, env, notify, pidfile};

/// Where the upgrade of this process stands. One at a time: only `Idle` may start one, and
/// `Done` is final.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    #[default]
    Idle,
    Starting,
    /// Handed over to this pid.
    Done(u32),
}

impl Net {
    /// Starts the new process with every listening socket, and returns without waiting for it.
    ///
    /// Most programs want [`upgrade`](Net::upgrade), which also waits and notifies systemd.
    ///
    /// # Errors
    ///
    /// [`Error::UpgradeInProgress`] while another new process is starting,
    /// [`Error::Superseded`] after a completed upgrade, [`Error::Executable`],
    /// [`Error::Closed`] after [`close`](Net::close), [`Error::Stopping`] after
    /// [`refuse_upgrades`](Net::refuse_upgrades), [`Error::Spawn`], and [`Error::Exec`] when
    /// `execve(2)` failed (missing or non-executable file): an error, never a child that dies
    /// later.
    pub fn start_process(&self) -> Result<Child, Error> {
        let (path, fds, vars) = {
            let mut st = self.state();
            match st.phase {
                Phase::Done(pid) => return Err(Error::Superseded { pid }),
                Phase::Starting => return Err(Error::UpgradeInProgress),
                Phase::Idle => {}
            }
            let path = self.executable()?.to_owned();
            if st.closed {
                return Err(Error::Closed);
            }
            if st.refusing {
                return Err(Error::Stopping);
            }
            let (fds, passed) = st.pool.handover().map_err(|source| Error::Spawn {
                path: path.clone(),
                source,
            })?;
            let vars = env::for_successor(&passed, self.generation + 1);
            // Nothing fails between here and the guard, which puts the phase back if the start
            // fails. The lock is not held while the process starts: nothing waits for it.
            st.phase = Phase::Starting;
            self.shared.cancel.store(false, Ordering::SeqCst);
            (path, fds, vars)
        };
        let guard = UpgradeGuard {
            shared: Arc::clone(&self.shared),
            committed: false,
        };
        let spec = spawn::Spec {
            path: &path,
            args: &self.config.args,
            cwd: &self.config.cwd,
            env: vars,
        };
        let spawned = spawn::spawn(spec, fds)?;
        // The successor's pid file is written now, while it starts, and only renamed into
        // place when it commits (`Child::wait_ready`).
        let pid_file = self.config.pid_file.as_ref().map(|path| PendingPidFile {
            path: path.clone(),
            prepared: pidfile::Prepared::ahead(path, spawned.pid()),
        });
        Ok(Child {
            spawned,
            guard,
            pid_file,
        })
    }

    /// Cancels the upgrade in progress, if any: the new process, not yet committed, is killed
    /// and reaped, and the waiting [`upgrade`](Net::upgrade) (or [`Child::wait_ready`]) returns
    /// [`Error::Cancelled`] within a few milliseconds. Returns whether an upgrade was in
    /// progress. An upgrade that already completed is not undone.
    ///
    /// For a process asked to stop while it upgrades: stopping must not leave a successor
    /// behind that takes over afterwards.
    pub fn cancel_upgrade(&self) -> bool {
        cancel_starting(&self.shared, &self.state())
    }

    /// Refuses every upgrade from now on ([`Error::Stopping`]), and cancels the one in progress,
    /// if any, as [`cancel_upgrade`](Net::cancel_upgrade) does; returns whether one was in
    /// progress.
    ///
    /// For a process that is stopping: an upgrade requested just before the stop may not have
    /// started yet (its thread not scheduled), so that `cancel_upgrade` finds nothing to cancel,
    /// and it would then start and take over after the stop.
    pub fn refuse_upgrades(&self) -> bool {
        let mut st = self.state();
        st.refusing = true;
        cancel_starting(&self.shared, &st)
    }

    /// Upgrades: starts the new process with every listening socket and waits (up to the
    /// ready timeout) until it reports ready. Blocks the calling thread; from async code, run
    /// it with `spawn_blocking`.
    ///
    /// On success it has told systemd `MAINPID=<new>` and `READY=1` and written the pid file:
    /// the caller should now stop accepting, drain, and exit. On failure the new process has
    /// been killed and reaped, systemd is told `READY=1` again, and every listener of this
    /// process works as before; the next attempt may follow at once.
    ///
    /// # Errors
    ///
    /// Those of [`start_process`](Net::start_process), then [`Error::ChildExited`],
    /// [`Error::ChildKilled`], [`Error::ReadyTimeout`], [`Error::Wait`] or
    /// [`Error::Cancelled`].
    pub fn upgrade(&self) -> Result<u32, Error> {
        let child = self.start_process()?;
        // A failed notification must not fail the upgrade: systemd only loses a status line.
        let _ = notify::reloading();
        match child.wait_ready(self.config.ready_timeout) {
            Ok(pid) => {
                // Committed: the successor serves whatever happens next, so nothing here may
                // turn this into an error.
                let _ = notify::main_pid(pid);
                Ok(pid)
            }
            Err(e) => {
                let _ = notify::ready();
                Err(e)
            }
        }
    }

    /// The pid this process handed over to, once an upgrade has completed.
    pub fn superseded(&self) -> Option<u32> {
        match self.state().phase {
            Phase::Done(pid) => Some(pid),
            _ => None,
        }
    }
}

/// Cancels the upgrade in `st`, if one is starting; returns whether one was.
pub(crate) fn cancel_starting(shared: &Shared, st: &State) -> bool {
    let starting = st.phase == Phase::Starting;
    if starting {
        shared.cancel.store(true, Ordering::SeqCst);
    }
    starting
}

/// Holds the upgrade in the `Starting` phase; dropped before the commit, it returns to `Idle`.
#[derive(Debug)]
struct UpgradeGuard {
    shared: Arc<Shared>,
    committed: bool,
}

impl Drop for UpgradeGuard {
    fn drop(&mut self) {
        if !self.committed {
            self.shared.state().phase = Phase::Idle;
        }
    }
}

/// A new process that has been started and has not reported ready yet.
///
/// Dropping it kills and reaps the process. While it exists, no other upgrade can start.
#[derive(Debug)]
pub struct Child {
    spawned: Spawned,
    guard: UpgradeGuard,
    pid_file: Option<PendingPidFile>,
}

/// The successor's pid file, written under its temporary name while it starts.
#[derive(Debug)]
struct PendingPidFile {
    path: PathBuf,
    prepared: Result<pidfile::Prepared, Error>,
}

impl PendingPidFile {
    /// Makes the pid file name `pid`; returns the file it replaced, still held (see
    /// `pidfile::Prepared`). A failure is not reported: the successor claims the file once it
    /// serves (`Net::claim_pid_file`).
    fn commit(self, pid: u32) -> Option<std::fs::File> {
        match self.prepared {
            Ok(prepared) => prepared.commit().ok().flatten(),
            Err(_) => {
                let _ = pidfile::write(&self.path, pid);
                None
            }
        }
    }
}

impl Child {
    /// The new process's pid.
    pub fn pid(&self) -> u32 {
        self.spawned.pid()
    }

    /// Waits until the new process reports ready, exits, or `timeout` passes (`None`: no
    /// limit). Returns its pid once it is ready; the upgrade is then complete (the `Net`
    /// refuses further ones with [`Error::Superseded`]), the pid file (when the `Net` has one)
    /// names the new process, and the new process runs on its own (it is not reaped by this
    /// process, which is expected to exit after draining).
    ///
    /// # Errors
    ///
    /// [`Error::ChildExited`], [`Error::ChildKilled`], [`Error::ReadyTimeout`],
    /// [`Error::Wait`], or [`Error::Cancelled`] after [`Net::cancel_upgrade`]; in every case
    /// the process has been killed (if it still ran) and reaped.
    pub fn wait_ready(mut self, timeout: Option<Duration>) -> Result<u32, Error> {
        let shared = Arc::clone(&self.guard.shared);
        self.spawned.wait_ready(timeout, &shared.cancel)?;
        let pid = self.spawned.pid();
        let mut st = shared.state();
        // The cancellation and the commit are decided under the lock, so they cannot both
        // win. On a cancellation that raced with readiness, dropping `self` (after the lock,
        // which its guard takes) kills the process and removes the prepared pid file.
        if shared.cancel.load(Ordering::SeqCst) {
            drop(st);
            return Err(Error::Cancelled);
        }
        st.phase = Phase::Done(pid);
        drop(st);
        self.guard.committed = true;
        self.spawned.detach();
        // Committed: nothing below may turn this into an error. The pid file is renamed into
        // place here (before the caller stops accepting), not written by the successor before
        // it reports ready, which would put a file write on its path to serving. Outside the
        // lock: a claim or a final stop of this process leave the file alone once it has
        // handed over. The file it replaced is freed with the `Net`: freeing it takes longer
        // than the rename, and the caller is about to stop accepting.
        if let Some(pending) = self.pid_file.take() {
            let replaced = pending.commit(pid);
            shared.state().replaced_pid_file = replaced;
        }
        Ok(pid)
    }
}
