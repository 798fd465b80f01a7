use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::endpoint::validate_name;
use crate::env::{self, Handed};
use crate::spawn::{self, Spawned};
use crate::{Endpoint, Error, Kind, exe, notify, pidfile, sys};

/// The default listen backlog for freshly bound stream sockets.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// The default time a new process gets to report ready.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The inherited descriptors are owned by one `Net` per process; a second one inherits nothing.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// The listening sockets of this process: inherited, rebuilt, and handed over.
///
/// A `Net` is created once, early in `main`. It adopts the sockets a parent (or systemd)
/// handed over, answers each `listen_*` call with the matching inherited socket or a fresh
/// one, and on [`upgrade`](Net::upgrade) starts the new binary with all of them.
///
/// `Net` is `Send + Sync`; share it with an `Arc`.
#[derive(Debug)]
pub struct Net {
    state: Mutex<State>,
    backlog: i32,
    args: Vec<OsString>,
    exe: Result<PathBuf, String>,
    cwd: PathBuf,
    pid_file: Option<PathBuf>,
    ready_timeout: Option<Duration>,
    generation: u64,
    has_parent: bool,
    ignored_listen_pid: Option<u32>,
    upgrade: Arc<Upgrade>,
}

#[derive(Debug, Default)]
struct State {
    /// Inherited sockets nothing has claimed yet.
    inherited: Vec<Inherited>,
    /// Every socket handed out, in order: what the next process gets.
    active: Vec<Active>,
    /// How often each unnamed request was made, to derive distinct names.
    requests: HashMap<Endpoint, usize>,
    ready_pipe: Option<OwnedFd>,
    ready_done: bool,
    /// [`Net::close`] ran: nothing is handed over any more.
    closed: bool,
    /// Names of inherited unix sockets whose files a predecessor created.
    socket_files: Vec<String>,
}

#[derive(Debug)]
struct Inherited {
    socket: Socket,
    name: String,
    kind: Kind,
    endpoint: Option<Endpoint>,
    /// A predecessor of this library bound it (`GRACENET_BOUND`).
    bound: bool,
}

#[derive(Debug)]
struct Active {
    /// A copy of the socket handed out. It keeps the socket open for the next process even
    /// after the application dropped its listener to stop accepting.
    socket: Socket,
    name: String,
    kind: Kind,
    endpoint: Option<Endpoint>,
    inherited: bool,
    /// A unix socket whose file a process of this library created (rather than systemd): the
    /// last process removes it on a final stop.
    owns_file: bool,
    /// Bound by a process of this library, not handed in by systemd or another program: only
    /// the line of generations holds it, so the last one may seal it on a final stop.
    bound: bool,
}

/// A socket as reported by [`Net::inherited`] and [`Net::listeners`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// Its name: from `LISTEN_FDNAMES` (`unknown` when none was given) for an inherited socket
    /// not yet claimed, else the name it is handed over under.
    pub name: String,
    /// What kind of socket it is.
    pub kind: Kind,
    /// Its local address, when it has one.
    pub endpoint: Option<Endpoint>,
    /// Whether this process inherited it (rather than binding it fresh).
    pub inherited: bool,
    /// Whether this process or a predecessor of this library bound it, so that no other
    /// program (systemd, a supervisor) holds it: [`Net::close`] seals it.
    pub bound: bool,
}

/// A socket returned by [`Net::listen`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A UDP socket.
    Udp(UdpSocket),
    /// A unix stream listener.
    Unix(UnixListener),
}

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
        let (handed, inherited, ready_pipe) = if self.inherit {
            inherit()?
        } else {
            Default::default()
        };
        let has_parent = ready_pipe.is_some();
        Ok(Net {
            state: Mutex::new(State {
                inherited,
                ready_pipe,
                socket_files: handed.socket_files.clone(),
                ..State::default()
            }),
            backlog: i32::try_from(self.backlog).unwrap_or(i32::MAX),
            args,
            exe,
            cwd,
            pid_file: self.pid_file,
            ready_timeout: self.ready_timeout,
            generation: handed.generation,
            has_parent,
            ignored_listen_pid: handed.foreign_pid,
            upgrade: Arc::new(Upgrade::default()),
        })
    }
}

/// Reads and adopts what the environment hands to this process.
fn inherit() -> Result<(Handed, Vec<Inherited>, Option<OwnedFd>), Error> {
    let pid = std::process::id();
    let parsed = env::parse(|k| std::env::var_os(k), pid, sys::fd_limit(), sys::is_open);
    scrub_env();
    let handed = parsed?;

    // Check every descriptor before taking any, so that an error leaves them all alone.
    // (`env::parse` checked that each is open.)
    for (fd, name) in &handed.fds {
        if !sys::is_socket(*fd) {
            return Err(Error::NotASocket {
                fd: *fd,
                name: name.clone(),
            });
        }
    }
    if let Some(fd) = handed.ready_fd {
        if !sys::is_open(fd) {
            return Err(Error::InvalidEnv {
                var: env::READY_FD,
                value: fd.to_string(),
                reason: "not an open descriptor".into(),
            });
        }
    }
    if ADOPTED.swap(true, Ordering::SeqCst) {
        // Another `Net` in this process owns them already.
        return Ok((handed, Vec::new(), None));
    }

    // Adopt all of them first, so that whatever fails next, each is closed exactly once.
    let owned: Vec<(OwnedFd, String)> = handed
        .fds
        .iter()
        // SAFETY: checked open above; sd_listen_fds(3) hands these to this process, and the
        // ADOPTED flag makes this the only place that takes them.
        .map(|(fd, name)| (unsafe { sys::adopt(*fd) }, name.clone()))
        .collect();
    // SAFETY: as above, for the readiness pipe named by GRACENET_READY_FD.
    let ready = handed.ready_fd.map(|fd| unsafe { sys::adopt(fd) });

    // Only a parent of this library says which sockets it bound; without one, an inherited
    // socket may be held by whoever handed it in.
    let has_parent = ready.is_some();
    let mut inherited = Vec::with_capacity(owned.len());
    for (position, (fd, name)) in owned.into_iter().enumerate() {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let err = |source: io::Error| Error::Inherit {
            fd: raw,
            name: name.clone(),
            source,
        };
        sys::set_cloexec(&fd).map_err(err)?;
        let socket = Socket::from(fd);
        // O_NONBLOCK belongs to the open socket, shared with every other process that holds
        // it. It is only ever switched on (tokio needs it), never off.
        socket.set_nonblocking(true).map_err(err)?;
        let (kind, endpoint) = sys::inspect(&socket).map_err(err)?;
        inherited.push(Inherited {
            socket,
            name,
            kind,
            endpoint,
            bound: has_parent && handed.bound.contains(&position),
        });
    }
    let ready = match ready {
        Some(fd) => {
            let bad = |reason: String| Error::InvalidEnv {
                var: env::READY_FD,
                value: handed.ready_fd.map(|f| f.to_string()).unwrap_or_default(),
                reason,
            };
            sys::set_cloexec(&fd).map_err(|e| bad(e.to_string()))?;
            if !sys::is_fifo(&fd).map_err(|e| bad(e.to_string()))? {
                return Err(bad("not a pipe".into()));
            }
            Some(fd)
        }
        None => None,
    };
    Ok((handed, inherited, ready))
}

/// Removes the protocol's variables from this process's environment, so that subprocesses
/// the application starts never see them.
///
/// Changing the environment is only sound while no other thread can read it, so this is done
/// only when the process has a single thread (create the [`Net`] before starting a runtime).
/// Otherwise the variables stay; they are harmless to well-behaved programs (`LISTEN_PID`
/// never equals a subprocess's pid) and [`scrub_command`] removes them per command.
fn scrub_env() {
    let single_threaded = fs::read_dir("/proc/self/task")
        .map(Iterator::count)
        .is_ok_and(|n| n == 1);
    if !single_threaded {
        return;
    }
    for var in env::ALL {
        if std::env::var_os(var).is_some() {
            // SAFETY: this process has exactly one thread (checked above, and only this thread
            // could start another), so nothing can read the environment concurrently.
            unsafe { std::env::remove_var(var) };
        }
    }
}

/// Removes the handover protocol's variables (`LISTEN_*`, `GRACENET_*`) from a command's
/// environment, for programs that start subprocesses while the variables are still set.
pub fn scrub_command(cmd: &mut Command) -> &mut Command {
    for var in env::ALL {
        cmd.env_remove(var);
    }
    cmd
}

impl Net {
    /// A `Net` with the default configuration: see [`Builder::build`].
    pub fn from_env() -> Result<Net, Error> {
        Builder::default().build()
    }

    /// Configures a `Net`.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every change is a single
        // push or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns a TCP listener on `addr`: the inherited one when there is one, else a fresh one.
    pub fn listen_tcp(&self, addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
        match self.listen(&Endpoint::Tcp(addr), None)? {
            Listener::Tcp(l) => Ok(l),
            _ => unreachable_kind(Kind::Tcp),
        }
    }

    /// Returns a UDP socket on `addr`: the inherited one when there is one, else a fresh one.
    pub fn listen_udp(&self, addr: std::net::SocketAddr) -> Result<UdpSocket, Error> {
        match self.listen(&Endpoint::Udp(addr), None)? {
            Listener::Udp(s) => Ok(s),
            _ => unreachable_kind(Kind::Udp),
        }
    }

    /// Returns a unix stream listener at `path`: the inherited one when there is one, else a
    /// fresh one (a stale socket file nobody listens on is replaced).
    pub fn listen_unix(&self, path: impl AsRef<Path>) -> Result<UnixListener, Error> {
        match self.listen(&Endpoint::Unix(path.as_ref().to_owned()), None)? {
            Listener::Unix(l) => Ok(l),
            _ => unreachable_kind(Kind::UnixStream),
        }
    }

    /// Returns a unix stream listener with `name` in the Linux abstract namespace (without the
    /// leading NUL byte).
    pub fn listen_unix_abstract(&self, name: &[u8]) -> Result<UnixListener, Error> {
        match self.listen(&Endpoint::UnixAbstract(name.to_vec()), None)? {
            Listener::Unix(l) => Ok(l),
            _ => unreachable_kind(Kind::UnixStream),
        }
    }

    /// Returns a socket for `endpoint`, optionally named.
    ///
    /// An inherited socket is used when one matches: first by name (the given `name`, or for an
    /// unnamed request a name derived from the request, so that a port-0 request finds the
    /// socket the previous process got for that same request), then by kind and address
    /// (`0.0.0.0` and `[::]` count as the same "any address"). Otherwise a fresh socket is
    /// bound: `SO_REUSEADDR` for TCP, never `SO_REUSEPORT`. Every socket is returned
    /// nonblocking and close-on-exec, ready for `tokio::net::*::from_std`, and is handed to the
    /// next process under its name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name sd_listen_fds(3) does not allow,
    /// [`Error::KindMismatch`] when the inherited socket of that name is of another kind, and
    /// [`Error::Bind`] when a fresh socket cannot be bound (address in use, permission).
    pub fn listen(&self, endpoint: &Endpoint, name: Option<&str>) -> Result<Listener, Error> {
        if let Some(name) = name {
            validate_name(name).map_err(|reason| Error::InvalidName {
                name: name.to_owned(),
                reason,
            })?;
        }
        let mut st = self.state();
        let key = match name {
            Some(name) => name.to_owned(),
            None => {
                let ordinal = st.requests.entry(endpoint.clone()).or_insert(0);
                let key = endpoint.derived_name(*ordinal);
                *ordinal += 1;
                key
            }
        };
        let bind_err = |source: io::Error| Error::Bind {
            addr: endpoint.to_string(),
            source,
        };

        let by_name = st.inherited.iter().position(|i| i.name == key);
        if let Some(i) = by_name {
            let found = st.inherited[i].kind;
            if found != endpoint.kind() {
                return Err(Error::KindMismatch {
                    name: key,
                    expected: endpoint.kind(),
                    found,
                });
            }
        }
        let found = by_name.or_else(|| {
            endpoint.is_concrete().then(|| {
                st.inherited.iter().position(|i| {
                    i.kind == endpoint.kind()
                        && i.endpoint
                            .as_ref()
                            .is_some_and(|e| endpoint.matches(e, &self.cwd))
                })
            })?
        });
        let (socket, actual, inherited, owns_file, bound) = match found {
            Some(i) => {
                let inherited = st.inherited.remove(i);
                let owns_file = st.socket_files.contains(&inherited.name);
                let bound = inherited.bound;
                let socket = inherited.socket;
                if endpoint.kind() == Kind::Tcp || endpoint.kind() == Kind::UnixStream {
                    // systemd and our parents hand over listening sockets; anything else handing
                    // us a bound but idle one still gets a working listener.
                    if !socket.is_listener().map_err(bind_err)? {
                        socket.listen(self.backlog).map_err(bind_err)?;
                    }
                }
                (socket, inherited.endpoint, true, owns_file, bound)
            }
            None => {
                let socket = self.bind(endpoint).map_err(bind_err)?;
                let actual = sys::inspect(&socket).map_err(bind_err)?.1;
                let owns_file = matches!(actual, Some(Endpoint::Unix(_)));
                (socket, actual, false, owns_file, true)
            }
        };
        if !st.closed {
            let copy = socket.try_clone().map_err(bind_err)?;
            st.active.push(Active {
                socket: copy,
                name: key,
                kind: endpoint.kind(),
                endpoint: actual,
                inherited,
                owns_file,
                bound,
            });
        }
        Ok(match endpoint.kind() {
            Kind::Tcp => Listener::Tcp(socket.into()),
            Kind::Udp => Listener::Udp(socket.into()),
            _ => Listener::Unix(socket.into()),
        })
    }

    fn bind(&self, endpoint: &Endpoint) -> io::Result<Socket> {
        let socket = match endpoint {
            Endpoint::Tcp(addr) => {
                let s = Socket::new(
                    Domain::for_address(*addr),
                    Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                s.set_reuse_address(true)?;
                s.bind(&(*addr).into())?;
                s.listen(self.backlog)?;
                s
            }
            Endpoint::Udp(addr) => {
                let s = Socket::new(
                    Domain::for_address(*addr),
                    Type::DGRAM,
                    Some(socket2::Protocol::UDP),
                )?;
                s.bind(&(*addr).into())?;
                s
            }
            Endpoint::Unix(path) => {
                let path = self.cwd.join(path);
                remove_stale_socket(&path)?;
                let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                s.bind(&SockAddr::unix(&path)?)?;
                s.listen(self.backlog)?;
                s
            }
            Endpoint::UnixAbstract(name) => {
                let mut bytes = Vec::with_capacity(name.len() + 1);
                bytes.push(0);
                bytes.extend_from_slice(name);
                let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                s.bind(&SockAddr::unix(OsStr::from_bytes(&bytes))?)?;
                s.listen(self.backlog)?;
                s
            }
        };
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    /// The sockets handed to this process that nothing has claimed yet.
    pub fn inherited(&self) -> Vec<SocketInfo> {
        self.state()
            .inherited
            .iter()
            .map(|i| SocketInfo {
                name: i.name.clone(),
                kind: i.kind,
                endpoint: i.endpoint.clone(),
                inherited: true,
                bound: i.bound,
            })
            .collect()
    }

    /// Every socket handed out so far, in order: what the next process gets.
    pub fn listeners(&self) -> Vec<SocketInfo> {
        self.state()
            .active
            .iter()
            .map(|a| SocketInfo {
                name: a.name.clone(),
                kind: a.kind,
                endpoint: a.endpoint.clone(),
                inherited: a.inherited,
                bound: a.bound,
            })
            .collect()
    }

    /// How many handovers came before this process: 0 for the first, then +1 per upgrade.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a parent process started this one and waits (or waited) for
    /// [`ready`](Net::ready).
    pub fn has_parent(&self) -> bool {
        self.has_parent
    }

    /// The `LISTEN_PID` found in the environment when it named another process: the
    /// variables were left over from an ancestor and were ignored, as libsystemd does.
    pub fn ignored_listen_pid(&self) -> Option<u32> {
        self.ignored_listen_pid
    }

    /// The program an upgrade starts.
    ///
    /// # Errors
    ///
    /// [`Error::Executable`] when `argv[0]` could not be resolved at start-up.
    pub fn executable(&self) -> Result<&Path, Error> {
        self.exe.as_deref().map_err(|reason| Error::Executable {
            name: self.args.first().map(PathBuf::from).unwrap_or_default(),
            reason: reason.clone(),
        })
    }

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
        st.inherited.clear();
        match st.ready_pipe.take() {
            Some(pipe) => {
                write_all(&pipe, b"READY=1\n").map_err(|source| Error::Ready { source })?
            }
            None => {
                if let Some(path) = &self.pid_file {
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
        let Some(path) = &self.pid_file else {
            return Ok(());
        };
        {
            let st = self.state();
            if !st.ready_done || st.closed {
                return Ok(());
            }
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
        // The rename under both locks: a final stop (which removes the file only if it names
        // this process) cannot run in between, and an upgrade cannot have committed and its
        // successor's pid be overwritten with this older one. Dropped, `prepared` removes its
        // temporary file.
        let st = self.state();
        let phase = self.upgrade.phase();
        if st.closed || matches!(*phase, Phase::Done(_)) {
            return Ok(());
        }
        prepared.commit().map(drop)
    }

    /// Starts the new process with every listening socket, and returns without waiting for it.
    ///
    /// Most programs want [`upgrade`](Net::upgrade), which also waits and notifies systemd.
    ///
    /// # Errors
    ///
    /// [`Error::UpgradeInProgress`] while another new process is starting,
    /// [`Error::Superseded`] after a completed upgrade, [`Error::Executable`],
    /// [`Error::Spawn`], and [`Error::Exec`] when `execve(2)` failed (missing or
    /// non-executable file): an error, never a child that dies later.
    pub fn start_process(&self) -> Result<Child, Error> {
        let guard = UpgradeGuard::acquire(&self.upgrade)?;
        let path = self.executable()?;
        let st = self.state();
        if st.closed {
            return Err(Error::Closed);
        }
        let fds: Vec<BorrowedFd<'_>> = st.active.iter().map(|a| a.socket.as_fd()).collect();
        let names = st
            .active
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(":");
        let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !env::ALL.iter().any(|v| OsStr::new(v) == k))
            .collect();
        vars.push((env::LISTEN_FDS.into(), fds.len().to_string().into()));
        vars.push((env::LISTEN_FDNAMES.into(), names.into()));
        let files = st
            .active
            .iter()
            .filter(|a| a.owns_file)
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(":");
        vars.push((env::SOCKET_FILES.into(), files.into()));
        let bound = st
            .active
            .iter()
            .enumerate()
            .filter(|(_, a)| a.bound)
            .map(|(position, _)| position.to_string())
            .collect::<Vec<_>>()
            .join(",");
        vars.push((
            env::BOUND.into(),
            format!("{};{bound}", self.generation + 1).into(),
        ));
        vars.push((
            env::GENERATION.into(),
            (self.generation + 1).to_string().into(),
        ));
        let spec = spawn::Spec {
            path,
            args: &self.args,
            cwd: &self.cwd,
            env: vars,
        };
        let spawned = spawn::spawn(spec, &fds)?;
        drop(st);
        // The successor's pid file is written now, while it starts, and only renamed into
        // place when it commits (`Child::wait_ready`).
        let pid_file = self.pid_file.as_ref().map(|path| PendingPidFile {
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
        let phase = self.upgrade.phase();
        if matches!(*phase, Phase::Starting) {
            self.upgrade.cancel.store(true, Ordering::SeqCst);
            true
        } else {
            false
        }
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
    /// [`Error::ChildKilled`], [`Error::ReadyTimeout`] or [`Error::Wait`].
    pub fn upgrade(&self) -> Result<u32, Error> {
        let child = self.start_process()?;
        // A failed notification must not fail the upgrade: systemd only loses a status line.
        let _ = notify::reloading();
        match child.wait_ready(self.ready_timeout) {
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
        match *self.upgrade.phase() {
            Phase::Done(pid) => Some(pid),
            _ => None,
        }
    }

    /// For a final stop (not a handover): seals the listening sockets that only this line of
    /// processes holds, closes this `Net`'s copies of every socket, removes the socket files of
    /// its unix listeners that this library created (a file systemd or another program created
    /// is left to them), and the pid file if it still names this process.
    ///
    /// Sealing is what lets a final stop lose no connection. Closing the last copy of a
    /// listening socket resets every connection still waiting in its queue, and under load there
    /// always are some. A sealed socket takes no new connection: a TCP client's SYN goes
    /// unanswered (it retries a second later and is refused then, once the socket has closed),
    /// a unix client is refused at once. Connections already queued, and for TCP those whose
    /// handshake is under way, can still be accepted from the application's copy. So after
    /// `close`, the application accepts what is left (nonblocking, until `WouldBlock`; for TCP
    /// also for about a round trip, for the handshakes under way), serves it, and only then
    /// drops its listener, which closes the port.
    ///
    /// A socket that systemd or another program handed in (here or to a predecessor) is not
    /// sealed, since they may hand it to the next instance; it stays open there, its queue with
    /// it ([`SocketInfo::bound`] tells which are sealed). Nor is anything sealed while an
    /// upgrade is in progress (its new process holds the sockets), nor by a new process before
    /// it has reported [`ready`](Net::ready): its parent still serves on them, and goes on
    /// serving if this process fails. Upgrades are refused after `close` with [`Error::Closed`]. After a handover,
    /// never call this: the sockets and files belong to the new process.
    ///
    /// # Errors
    ///
    /// [`Error::Seal`] when a socket could not be sealed (the first such failure), and
    /// [`Error::PidFile`] when the pid file cannot be read or removed. Either way, every socket
    /// is closed and the socket files are removed.
    pub fn close(&self) -> Result<(), Error> {
        let (active, sealing) = {
            let mut st = self.state();
            st.closed = true;
            st.inherited.clear();
            // With `closed` set, no upgrade can start any more; one started before holds the
            // phase until its new process is gone or has taken over. (State, then phase: the
            // order `claim_pid_file` takes them in.)
            let idle = *self.upgrade.phase() == Phase::Idle;
            // A process whose parent waits for it has not been committed to before it says
            // ready: the parent still serves on these sockets, and goes on if this one fails.
            let committed = !self.has_parent || st.ready_done;
            (std::mem::take(&mut st.active), idle && committed)
        };
        let mut sealed = Ok(());
        for a in active.iter().filter(|a| sealing && a.bound) {
            if let Err(source) = sys::seal(&a.socket, a.kind) {
                if sealed.is_ok() {
                    sealed = Err(Error::Seal {
                        name: a.name.clone(),
                        source,
                    });
                }
            }
        }
        for a in active.iter().filter(|a| a.owns_file) {
            if let Some(Endpoint::Unix(path)) = &a.endpoint {
                let path = self.cwd.join(path);
                // Only a socket: anything else at that path is not ours to remove.
                if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = fs::remove_file(path);
                }
            }
        }
        drop(active);
        let pid_file = match &self.pid_file {
            Some(path) => pidfile::remove(path, std::process::id()),
            None => Ok(()),
        };
        sealed.and(pid_file)
    }
}

fn unreachable_kind<T>(kind: Kind) -> Result<T, Error> {
    // `listen` returns the variant of the endpoint's kind; this only keeps the typed wrappers
    // total without a panic.
    Err(Error::Bind {
        addr: kind.to_string(),
        source: io::Error::other("listener of an unexpected kind"),
    })
}

/// A unix socket file left behind by a process that is gone blocks `bind`. It is replaced
/// only when nothing accepts on it; a live listener is an `AddrInUse` error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process listens on this socket",
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path),
            Err(_) => Ok(()),
        },
        _ => Ok(()),
    }
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

/// Where the upgrade of this process stands. One at a time: only `Idle` may start one, and
/// `Done` is final.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    Starting,
    /// Handed over to this pid.
    Done(u32),
}

#[derive(Debug, Default)]
struct Upgrade {
    phase: Mutex<Phase>,
    /// Set by [`Net::cancel_upgrade`]; the thread waiting for the new process polls it.
    cancel: AtomicBool,
    /// The pid file the committed upgrade replaced, freed with the `Net` (see
    /// [`pidfile::Prepared`]).
    replaced_pid_file: Mutex<Option<fs::File>>,
}

impl Upgrade {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        // Every change is a single assignment, so a poisoned lock still holds a valid phase.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Holds the upgrade in the `Starting` phase; dropped without [`commit`](UpgradeGuard::commit)
/// it returns to `Idle`.
#[derive(Debug)]
struct UpgradeGuard {
    upgrade: Arc<Upgrade>,
    committed: bool,
}

impl UpgradeGuard {
    fn acquire(upgrade: &Arc<Upgrade>) -> Result<UpgradeGuard, Error> {
        let mut phase = upgrade.phase();
        match *phase {
            Phase::Done(pid) => return Err(Error::Superseded { pid }),
            Phase::Starting => return Err(Error::UpgradeInProgress),
            Phase::Idle => *phase = Phase::Starting,
        }
        upgrade.cancel.store(false, Ordering::SeqCst);
        Ok(UpgradeGuard {
            upgrade: Arc::clone(upgrade),
            committed: false,
        })
    }

    /// Moves to `Done(pid)` unless the upgrade was cancelled meanwhile; both under the lock,
    /// so a cancellation and a commit cannot both win.
    fn commit(&mut self, pid: u32) -> Result<(), Error> {
        let mut phase = self.upgrade.phase();
        if self.upgrade.cancel.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        *phase = Phase::Done(pid);
        self.committed = true;
        Ok(())
    }
}

impl Drop for UpgradeGuard {
    fn drop(&mut self) {
        if !self.committed {
            *self.upgrade.phase() = Phase::Idle;
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
        let cancel = &self.guard.upgrade.cancel;
        self.spawned.wait_ready(timeout, cancel)?;
        let pid = self.spawned.pid();
        // On a cancellation that raced with readiness, dropping `self` kills the process (and
        // removes the prepared pid file).
        self.guard.commit(pid)?;
        self.spawned.detach();
        // Committed: nothing below may turn this into an error. The pid file is renamed into
        // place here (before the caller stops accepting), not written by the successor before
        // it reports ready, which would put a file write on its path to serving. A successor
        // using this library checks it once serving (`Net::claim_pid_file`), so a failure here
        // is not the last word.
        if let Some(pending) = self.pid_file.take() {
            match pending.prepared {
                Ok(prepared) => {
                    if let Ok(Some(replaced)) = prepared.commit() {
                        // Freeing the replaced file takes longer than the rename; the caller
                        // is about to stop accepting, so not now.
                        *self
                            .guard
                            .upgrade
                            .replaced_pid_file
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(replaced);
                    }
                }
                Err(_) => {
                    let _ = pidfile::write(&pending.path, pid);
                }
            }
        }
        Ok(pid)
    }
}

impl Listener {
    /// The TCP listener, if this is one.
    pub fn into_tcp(self) -> Option<TcpListener> {
        match self {
            Listener::Tcp(l) => Some(l),
            _ => None,
        }
    }

    /// The UDP socket, if this is one.
    pub fn into_udp(self) -> Option<UdpSocket> {
        match self {
            Listener::Udp(s) => Some(s),
            _ => None,
        }
    }

    /// The unix listener, if this is one.
    pub fn into_unix(self) -> Option<UnixListener> {
        match self {
            Listener::Unix(l) => Some(l),
            _ => None,
        }
    }
}
