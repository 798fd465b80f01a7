//! Configuring and building a [`Net`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::inherit::{self, Inheritance};
use crate::listen::Pool;
use crate::net::{Config, Shared, State};
use crate::{Error, Net, exe};

/// The default listen backlog for freshly bound stream sockets.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// The default time a new process gets to report ready.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures a [`Net`].
#[derive(Debug, Clone)]
pub struct Builder {
    backlog: u32,
    executable: Option<PathBuf>,
    args: Option<Vec<OsString>>,
    pid_file: Option<PathBuf>,
    ready_timeout: Option<Duration>,
    inherit: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            backlog: DEFAULT_BACKLOG,
            executable: None,
            args: None,
            pid_file: None,
            ready_timeout: Some(DEFAULT_READY_TIMEOUT),
            inherit: true,
        }
    }
}

impl Builder {
    /// The backlog for stream sockets bound fresh (default [`DEFAULT_BACKLOG`]; the kernel
    /// caps it at `net.core.somaxconn`).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// The program to start on an upgrade, instead of `argv[0]` resolved through `PATH`.
    pub fn executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.executable = Some(path.into());
        self
    }

    /// The complete argument vector (including `argv[0]`) for the new process, instead of
    /// this process's own.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// A pid file that always names the process that serves: written atomically by
    /// [`Net::ready`], and by the parent for its successor after an upgrade.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// How long [`Net::upgrade`] waits for the new process to report ready (`None`: no
    /// limit; default [`DEFAULT_READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Whether to adopt the sockets named by `LISTEN_FDS` (default `true`).
    pub fn inherit(mut self, inherit: bool) -> Self {
        self.inherit = inherit;
        self
    }

    /// Reads the environment, adopts the inherited sockets and resolves the executable.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEnv`] when a variable of the protocol is malformed (nothing is adopted
    /// then), [`Error::NotASocket`] when an inherited descriptor is not a socket, and
    /// [`Error::Inherit`] when one cannot be prepared. An executable that cannot be resolved is
    /// not an error here: it is reported by [`Net::upgrade`], the first time it matters.
    pub fn build(self) -> Result<Net, Error> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let args: Vec<OsString> = self.args.unwrap_or_else(|| std::env::args_os().collect());
        let exe = match self.executable {
            Some(p) => Ok(cwd.join(p)),
            None => match args.first() {
                Some(argv0) => exe::resolve(argv0, &cwd, std::env::var_os("PATH").as_deref()),
                None => Err("the argument vector is empty".to_owned()),
            },
        };
        let inheritance = if self.inherit {
            inherit::from_env()?
        } else {
            Inheritance::default()
        };
        let has_parent = inheritance.ready_pipe.is_some();
        let state = State {
            pool: Pool::new(inheritance.sockets, inheritance.socket_files),
            ready_pipe: inheritance.ready_pipe,
            ..State::default()
        };
        Ok(Net {
            shared: Arc::new(Shared::new(state)),
            config: Config {
                backlog: i32::try_from(self.backlog).unwrap_or(i32::MAX),
                args,
                exe,
                cwd,
                pid_file: self.pid_file,
                ready_timeout: self.ready_timeout,
            },
            generation: inheritance.generation,
            has_parent,
            ignored_listen_pid: inheritance.foreign_pid,
        })
    }
}
