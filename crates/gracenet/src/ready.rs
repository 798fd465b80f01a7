//! Reporting ready: to the parent through the readiness pipe, or, for a first process, to
//! systemd and in the pid file; and a successor's claim on the pid file once it serves.

use std::io;
use std::os::fd::OwnedFd;

use crate::net::State;
use crate::upgrade::Phase;
use crate::{Error, Net, notify, pidfile};

impl Net {
    /// Tells whoever started this process that it serves. Call it once every listener is
    /// accepting.
    ///
    /// It closes the inherited sockets nothing claimed, then reports to the parent through the
    /// readiness pipe, or, without a parent, writes the pid file (when one is configured) and
    /// sends `READY=1` to systemd. (After an upgrade the parent sends systemd `MAINPID=` and
    /// `READY=1` for its successor, since systemd accepts those only from the main process, and
    /// rewrites the pid file when it commits: that write is kept off the path between this
    /// report and this process serving. Call [`claim_pid_file`](Net::claim_pid_file) once
    /// serving, to cover a parent that had no pid file or could not write it.) Calling it
    /// again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::PidFile`] (without a parent), [`Error::Ready`] (the parent has gone) or
    /// [`Error::Notify`].
    pub fn ready(&self) -> Result<(), Error> {
        let mut st = self.state();
        if st.ready_done {
            return Ok(());
        }
        st.pool.clear_inherited();
        match st.ready_pipe.take() {
            Some(pipe) => {
                write_all(&pipe, b"READY=1\n").map_err(|source| Error::Ready { source })?
            }
            None => {
                if let Some(path) = &self.config.pid_file {
                    pidfile::write(path, std::process::id())?;
                }
                notify::ready()?
            }
        }
        st.ready_done = true;
        Ok(())
    }

    /// Makes the pid file (when one is configured) name this process, unless it already does,
    /// this process has handed over since, or it was closed. Meant for a process started by an
    /// upgrade, once it serves: its parent renames the pid file into place when it commits, but
    /// may have had no pid file configured (an older version) or failed to write it. Does
    /// nothing before [`ready`](Net::ready).
    ///
    /// It blocks on file I/O: from async code, run it with `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// [`Error::PidFile`] when the file cannot be read or written.
    pub fn claim_pid_file(&self) -> Result<(), Error> {
        let Some(path) = &self.config.pid_file else {
            return Ok(());
        };
        if !may_claim(&self.state()) {
            return Ok(());
        }
        let pid = std::process::id();
        let current = pidfile::read(path).map_err(|source| Error::PidFile {
            path: path.clone(),
            source,
        })?;
        if current == Some(pid) {
            return Ok(());
        }
        let prepared = pidfile::Prepared::new(path, pid)?;
        // The rename under the lock: a final stop (which removes the file only if it names this
        // process) cannot run in between, and an upgrade cannot have committed and its
        // successor's pid be overwritten with this older one. Dropped, `prepared` removes its
        // temporary file.
        let st = self.state();
        if !may_claim(&st) {
            return Ok(());
        }
        prepared.commit().map(drop)
    }
}

/// Whether the pid file is this process's to write: ready, not closed, not handed over.
fn may_claim(st: &State) -> bool {
    st.ready_done && !st.closed && !matches!(st.phase, Phase::Done(_))
}

fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
