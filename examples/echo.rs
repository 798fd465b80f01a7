//! A line echo server that upgrades itself without dropping a connection, built on `gracenet`
//! and tokio alone.
//!
//! ```text
//! cargo run -p grace-examples --bin echo -- --tcp 127.0.0.1:7000 --unix /tmp/echo.sock
//! printf 'hello\npid\n' | nc -q1 127.0.0.1 7000    # "hello", then "pid 12345"
//! kill -USR2 12345                                  # a new process takes over the sockets
//! ```
//!
//! Each line a client sends is written back; the line `pid` is answered with `pid N` instead,
//! so that one can tell which process served it.
//!
//! `SIGUSR2` starts the binary found at the same path with the same arguments and hands it
//! every listening socket. Once the new process reports ready, this one stops accepting, lets
//! each open session finish (a session closes after answering its next line, or when the
//! client closes), and exits 0. If the new process does not come up, this one keeps serving
//! and the next `SIGUSR2` tries again. `SIGTERM` and `SIGINT` stop the same way, except that
//! the sockets are sealed first (`Net::close`: no new connection is queued), the connections
//! already queued are still taken and served, and the unix socket files and the pid file are
//! removed. A second `SIGTERM`/`SIGINT` while draining drops the sessions that are left.
//!
//! It also runs under systemd socket activation, for example
//! `systemd-socket-activate -l 127.0.0.1:7000 target/debug/echo --tcp 127.0.0.1:7000`: the
//! inherited socket is found by its address.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gracenet::{Endpoint, Linger, Net, SocketInfo};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

const USAGE: &str = "\
echo: a line echo server that upgrades itself without dropping a connection

Usage: echo [--tcp ADDR]... [--unix PATH]... [--pid-file PATH]
            [--ready-timeout DUR] [--drain-timeout DUR]

Options:
  --tcp ADDR           serve TCP on ADDR (default 127.0.0.1:7000); repeatable
  --unix PATH          also serve a unix socket at PATH (@NAME: abstract); repeatable
  --pid-file PATH      keep PATH naming the process that serves
  --ready-timeout DUR  how long a new version gets to report ready (default 30s)
  --drain-timeout DUR  how long open sessions get to finish (default 10s)
  -h, --help           print this help

Each line is echoed back; the line `pid` is answered with `pid N`.
SIGUSR2: upgrade to the binary at the same path. SIGTERM, SIGINT: stop.
DUR is a whole number with a unit: ms, s, m or h (500ms, 5s, 1m).
";

const DEFAULT_TCP: &str = "127.0.0.1:7000";
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A line longer than this closes the session: it bounds the memory one client can take.
const MAX_LINE: u64 = 64 * 1024;
/// How long a draining session waits for the client to close after the last answer.
const LINGER: Duration = Duration::from_secs(1);
/// The pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOMEM).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// What the accept loops are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accepting {
    Yes,
    /// A handover: stop and leave the queue to the new process.
    Stop,
    /// A final stop: `Net::close` sealed the sockets and closed gracenet's copies. Take what is
    /// queued, then close the last copy: closing it first would reset those connections.
    TakeQueue,
}

/// One line on stderr, with the pid: several generations may share the same log.
///
/// The line is written with one `write(2)`, so that the lines of two generations writing at
/// once do not interleave (a pipe keeps writes up to `PIPE_BUF` whole), and `eprintln!` would
/// panic if stderr were a closed pipe: a lost log line must not stop a server.
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("echo[{}]: {}\n", std::process::id(), format_args!($($arg)*));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

fn main() -> ExitCode {
    let config = match Config::parse(std::env::args_os().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            use std::io::Write as _;
            let _ = io::stdout().lock().write_all(USAGE.as_bytes());
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            fatal(&message);
            return ExitCode::from(2);
        }
    };

    // The `Net` comes first, while this process still has a single thread: that is what lets
    // gracenet remove LISTEN_* from the environment, so that no subprocess sees them.
    let mut builder = Net::builder();
    if let Some(timeout) = config.ready_timeout {
        builder = builder.ready_timeout(Some(timeout));
    }
    if let Some(path) = &config.pid_file {
        builder = builder.pid_file(path);
    }
    let net = match builder.build() {
        Ok(net) => Arc::new(net),
        Err(e) => {
            fatal(&e.to_string());
            return ExitCode::FAILURE;
        }
    };

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            fatal(&format!("cannot start the tokio runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(net, config));
    // Sessions still open here were given up on by the drain; dropping them closes them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

fn fatal(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(io::stderr().lock(), "echo: {message}");
}

/// Why the serving phase ended.
enum Stop {
    /// An upgrade completed; the new process with this pid serves now.
    HandedOver(u32),
    /// A stop signal, by name.
    Signal(&'static str),
}

async fn run(net: Arc<Net>, config: Config) -> ExitCode {
    // Handlers first: until one is installed, SIGUSR2 would kill the process.
    let signals = (
        signal(SignalKind::user_defined2()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (mut usr2, mut term, mut int) = match signals {
        (Ok(usr2), Ok(term), Ok(int)) => (usr2, term, int),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            fatal(&format!("cannot install signal handlers: {e}"));
            return ExitCode::FAILURE;
        }
    };

    let sessions = Arc::new(Sessions::default());
    let (stop_accepting, stop_rx) = watch::channel(Accepting::Yes);
    let mut acceptors = JoinSet::new();
    // A failure here leaves files alone: a fresh unix socket file is replaced by the next
    // start, and an inherited one belongs to the process (or systemd) that handed it over.
    match open_listeners(&net, &config) {
        Ok(listeners) => {
            for listener in listeners {
                let task = accept_loop(listener, stop_rx.clone(), Arc::clone(&sessions));
                acceptors.spawn(task);
            }
        }
        Err(message) => {
            fatal(&message);
            return ExitCode::FAILURE;
        }
    }

    let parent = net.has_parent();
    if let Err(e) = net.ready() {
        fatal(&e.to_string());
        return ExitCode::FAILURE;
    }
    log!(
        "ready (generation {}, {})",
        net.generation(),
        if parent {
            "reported to the parent process"
        } else {
            "first process"
        }
    );
    if parent {
        // The parent rewrote the pid file when it committed; this covers a parent that had
        // none configured. A file write: off the runtime's threads.
        let net = Arc::clone(&net);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = net.claim_pid_file() {
                log!("warning: {e}");
            }
        });
    }

    let mut upgrades: JoinSet<Result<u32, gracenet::Error>> = JoinSet::new();
    let stop = loop {
        tokio::select! {
            _ = usr2.recv() => {
                log!("SIGUSR2: upgrading");
                let net = Arc::clone(&net);
                // `upgrade` blocks until the new process is ready or has failed. A second
                // request while one runs is refused by gracenet itself (UpgradeInProgress).
                upgrades.spawn_blocking(move || net.upgrade());
            }
            Some(result) = upgrades.join_next() => {
                if let Some(pid) = upgrade_outcome(result) {
                    break Stop::HandedOver(pid);
                }
            }
            _ = term.recv() => break Stop::Signal("SIGTERM"),
            _ = int.recv() => break Stop::Signal("SIGINT"),
        }
    };

    let mut successor = match stop {
        Stop::HandedOver(pid) => Some(pid),
        Stop::Signal(name) => {
            log!("{name}: stopping");
            if !upgrades.is_empty() {
                log!("waiting for the upgrade in progress to finish first");
            }
            None
        }
    };
    // An upgrade that completes while a stop waits for it still hands over: the new process
    // serves then, and this one only drains. (Stop the new one as well if that is wanted.)
    // A second stop signal gives up waiting; the outcome is unknown then, so the files stay.
    let mut outcome_known = true;
    while !upgrades.is_empty() {
        tokio::select! {
            Some(result) = upgrades.join_next() => {
                if let Some(pid) = upgrade_outcome(result) {
                    successor = Some(pid);
                }
            }
            _ = term.recv() => outcome_known = false,
            _ = int.recv() => outcome_known = false,
            _ = usr2.recv() => log!("SIGUSR2 ignored: this process is stopping"),
        }
        if !outcome_known {
            log!("stop signal again: not waiting for the upgrade any longer");
            break;
        }
    }
    if successor.is_none() {
        if let Err(e) = gracenet::notify::stopping() {
            log!("{e}");
        }
    }

    if successor.is_none() && outcome_known {
        // A final stop: seal the sockets (no new connection is queued), close gracenet's
        // copies, and remove the socket and pid files. The accept loops then take what is still
        // queued before their copy, the last one, closes. Never after a handover: the sockets
        // and files belong to the successor then.
        if let Err(e) = net.close() {
            log!("{e}");
        }
        let _ = stop_accepting.send(Accepting::TakeQueue);
    } else {
        // Each accept loop drops its listener. gracenet keeps its own copy of every socket, so
        // the successor's copy is untouched; nothing is shut down.
        let _ = stop_accepting.send(Accepting::Stop);
    }
    while acceptors.join_next().await.is_some() {}
    sessions.draining.store(true, Ordering::SeqCst);
    log!(
        "stopped accepting; draining {} session(s) for at most {:?}",
        sessions.active(),
        config.drain_timeout
    );
    drain(
        &sessions,
        config.drain_timeout,
        &mut usr2,
        &mut term,
        &mut int,
    )
    .await;

    match successor {
        Some(pid) => log!("exiting (handed over to pid {pid})"),
        None if outcome_known => log!("exiting (stopped)"),
        None => log!("exiting (stopped; files left in place)"),
    }
    ExitCode::SUCCESS
}

/// Logs how an upgrade ended; returns the new process's pid when it took over.
fn upgrade_outcome(result: Result<Result<u32, gracenet::Error>, JoinError>) -> Option<u32> {
    match result {
        Ok(Ok(pid)) => {
            log!("upgrade done: pid {pid} serves now");
            Some(pid)
        }
        Ok(Err(gracenet::Error::UpgradeInProgress)) => {
            log!("SIGUSR2 refused: an upgrade is already in progress");
            None
        }
        Ok(Err(e)) => {
            log!("upgrade failed, still serving: {e}");
            None
        }
        Err(e) => {
            log!("upgrade failed, still serving: the upgrade task failed: {e}");
            None
        }
    }
}

/// Waits until every session has finished, the drain timeout passes, or a second stop signal
/// arrives.
async fn drain(
    sessions: &Sessions,
    timeout: Duration,
    usr2: &mut Signal,
    term: &mut Signal,
    int: &mut Signal,
) {
    let mut deadline = pin!(tokio::time::sleep(timeout));
    loop {
        tokio::select! {
            () = sessions.idle() => {
                log!("all sessions finished");
                return;
            }
            () = &mut deadline => {
                log!("drain timeout: dropping {} session(s)", sessions.active());
                return;
            }
            _ = term.recv() => {
                log!("SIGTERM while draining: dropping {} session(s)", sessions.active());
                return;
            }
            _ = int.recv() => {
                log!("SIGINT while draining: dropping {} session(s)", sessions.active());
                return;
            }
            _ = usr2.recv() => log!("SIGUSR2 ignored: this process is draining"),
        }
    }
}

/// A listener of this process, and what gracenet says it is.
struct Acceptor {
    listener: Listening,
    info: SocketInfo,
}

enum Listening {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Connection {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Acceptor {
    async fn accept(&self) -> io::Result<Connection> {
        match &self.listener {
            Listening::Tcp(l) => l.accept().await.map(|(s, _)| Connection::Tcp(s)),
            Listening::Unix(l) => l.accept().await.map(|(s, _)| Connection::Unix(s)),
        }
    }

    /// Takes what is left in the kernel's queue without waiting (gracenet's `take_queued`, on
    /// the listener taken back from the runtime), and closes this copy of the socket.
    fn take_queued(self) -> Vec<Connection> {
        let taken = match self.listener {
            Listening::Tcp(l) => l.into_std().map(|l| {
                register(gracenet::take_queued(l), |s| {
                    TcpStream::from_std(s).map(Connection::Tcp)
                })
            }),
            Listening::Unix(l) => l.into_std().map(|l| {
                register(gracenet::take_queued(l), |s| {
                    UnixStream::from_std(s).map(Connection::Unix)
                })
            }),
        };
        taken.unwrap_or_else(|e| {
            log!("final stop: cannot take the queue: {e}");
            Vec::new()
        })
    }
}

/// Registers each connection taken from a queue with the runtime.
fn register<S>(
    queued: impl Iterator<Item = io::Result<S>>,
    register: impl Fn(S) -> io::Result<Connection>,
) -> Vec<Connection> {
    let mut taken = Vec::new();
    for accepted in queued {
        match accepted.and_then(&register) {
            Ok(connection) => taken.push(connection),
            Err(e) => log!("final stop: a queued connection was lost: {e}"),
        }
    }
    taken
}

/// Asks gracenet for every listener (the inherited one when there is one, else a fresh one)
/// and hands it to tokio. The error is one line that names the address.
fn open_listeners(net: &Net, config: &Config) -> Result<Vec<Acceptor>, String> {
    let tcp = config.tcp.iter().map(|&addr| Endpoint::Tcp(addr));
    tcp.chain(config.unix.iter().cloned())
        .map(|endpoint| open(net, &endpoint))
        .collect()
}

fn open(net: &Net, endpoint: &Endpoint) -> Result<Acceptor, String> {
    let (listener, info) = net.listen(endpoint, None).map_err(|e| e.to_string())?;
    let runtime = |e: io::Error| format!("{endpoint}: {e}");
    let (listener, shown) = match listener {
        gracenet::Listener::Tcp(l) => {
            let l = TcpListener::from_std(l).map_err(runtime)?;
            // With port 0 the kernel picked one: show it.
            let shown = l.local_addr().map(|a| format!("tcp://{a}"));
            (
                Listening::Tcp(l),
                shown.unwrap_or_else(|_| endpoint.to_string()),
            )
        }
        gracenet::Listener::Unix(l) => {
            let l = UnixListener::from_std(l).map_err(runtime)?;
            (Listening::Unix(l), endpoint.to_string())
        }
        _ => return Err(format!("{endpoint}: not a stream socket")),
    };
    let how = if info.inherited {
        "inherited"
    } else {
        "bound fresh"
    };
    log!("serving {shown} (generation {}, {how})", net.generation());
    Ok(Acceptor { listener, info })
}

async fn accept_loop(
    acceptor: Acceptor,
    mut stop: watch::Receiver<Accepting>,
    sessions: Arc<Sessions>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|a| *a != Accepting::Yes) => break,
            accepted = acceptor.accept() => accepted,
        };
        match accepted {
            Ok(connection) => start_session(connection, &sessions),
            // Errors about one connection that went away before it was accepted.
            Err(e) if gracenet::is_connection_error(&e) => {}
            // Out of descriptors or memory: retrying at once would spin. Pause, keep serving.
            Err(e) => {
                log!("accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                tokio::select! {
                    _ = stop.wait_for(|a| *a != Accepting::Yes) => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    if *stop.borrow() != Accepting::TakeQueue {
        return;
    }
    // The handshakes under way when the socket was sealed still complete into the queue.
    if let Some(mut linger) = Linger::after_close(&acceptor.info, Instant::now()) {
        while let Ok(accepted) = tokio::time::timeout_at(linger.deadline(), acceptor.accept()).await
        {
            match accepted {
                Ok(connection) => start_session(connection, &sessions),
                Err(e) if gracenet::is_connection_error(&e) => {}
                // Out of descriptors or memory: do not spin; take what the queue still holds.
                Err(_) => break,
            }
            linger.accepted(Instant::now());
        }
    }
    let taken = acceptor.take_queued();
    if !taken.is_empty() {
        log!("final stop: {} queued connection(s) taken", taken.len());
    }
    for connection in taken {
        start_session(connection, &sessions);
    }
}

fn start_session(connection: Connection, sessions: &Arc<Sessions>) {
    let guard = SessionGuard::enter(sessions);
    tokio::spawn(async move {
        let sessions = Arc::clone(&guard.0);
        // A client that goes away mid-line is its own business: nothing to log.
        let _ = match connection {
            Connection::Tcp(s) => session(s, &sessions).await,
            Connection::Unix(s) => session(s, &sessions).await,
        };
        drop(guard);
    });
}

/// One client: echo each line until the client closes; once the process drains, close after
/// answering the next line.
async fn session<S>(stream: S, sessions: &Sessions) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut stream)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text == b"pid" {
            let answer = format!("pid {}\n", std::process::id());
            stream.write_all(answer.as_bytes()).await?;
        } else if !line.ends_with(b"\n") && n as u64 == MAX_LINE {
            stream.write_all(b"error: line too long\n").await?;
            return close(stream).await;
        } else {
            stream.write_all(&line).await?;
        }
        if sessions.draining.load(Ordering::SeqCst) {
            return close(stream).await;
        }
    }
}

/// Closes a session gracefully: FIN after the last answer, then read (and discard) until the
/// client closes too, for a short while. Closing a socket that still holds unread input sends
/// a reset, which can make the client lose the answer it has not read yet.
async fn close<S>(mut stream: BufReader<S>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let linger = async {
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    // A client that keeps the connection open past the linger time is closed anyway.
    let _ = tokio::time::timeout(LINGER, linger).await;
    Ok(())
}

/// Counts the open sessions, so that a drain can wait until there are none.
#[derive(Debug, Default)]
struct Sessions {
    active: AtomicUsize,
    /// Set once the process stops accepting: sessions close after their next answer.
    draining: AtomicBool,
    idle: Notify,
}

impl Sessions {
    fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Resolves once no session is open.
    async fn idle(&self) {
        loop {
            let mut notified = pin!(self.idle.notified());
            // Registered before the check, so a session ending in between is not missed.
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open session; dropping it (even when the task is dropped) ends the count.
struct SessionGuard(Arc<Sessions>);

impl SessionGuard {
    fn enter(sessions: &Arc<Sessions>) -> SessionGuard {
        sessions.active.fetch_add(1, Ordering::SeqCst);
        SessionGuard(Arc::clone(sessions))
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The command line.
#[derive(Debug)]
struct Config {
    tcp: Vec<SocketAddr>,
    unix: Vec<Endpoint>,
    pid_file: Option<PathBuf>,
    ready_timeout: Option<Duration>,
    drain_timeout: Duration,
}

impl Config {
    /// Parses the arguments (without `argv[0]`); `None` means help was asked for. Errors are
    /// one line that names the flag and the value.
    fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Config>, String> {
        let mut config = Config {
            tcp: Vec::new(),
            unix: Vec::new(),
            pid_file: None,
            ready_timeout: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(arg) = arg.to_str() else {
                return Err(format!("unexpected argument {arg:?} (see --help)"));
            };
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag, Some(OsString::from(value)))
                }
                _ => (arg, None),
            };
            match flag {
                "-h" | "--help" if inline.is_none() => return Ok(None),
                "--tcp" => {
                    let value = value(flag, inline, &mut args)?;
                    config.tcp.push(parse_tcp(flag, &value)?);
                }
                "--unix" => {
                    let value = value(flag, inline, &mut args)?;
                    config.unix.push(parse_unix(flag, value)?);
                }
                "--pid-file" => {
                    let value = value(flag, inline, &mut args)?;
                    if value.is_empty() {
                        return Err(format!("invalid value \"\" for {flag}: expected a path"));
                    }
                    config.pid_file = Some(PathBuf::from(value));
                }
                "--ready-timeout" => {
                    let value = value(flag, inline, &mut args)?;
                    config.ready_timeout = Some(parse_duration(flag, &value)?);
                }
                "--drain-timeout" => {
                    let value = value(flag, inline, &mut args)?;
                    config.drain_timeout = parse_duration(flag, &value)?;
                }
                _ if flag.starts_with('-') => {
                    return Err(format!("unknown flag {arg:?} (see --help)"));
                }
                _ => return Err(format!("unexpected argument {arg:?} (see --help)")),
            }
        }
        if config.tcp.is_empty() {
            config.tcp.push(parse_tcp("--tcp", DEFAULT_TCP)?);
        }
        Ok(Some(config))
    }
}

/// The value of `flag`: after `=`, or the next argument.
fn value(
    flag: &str,
    inline: Option<OsString>,
    args: &mut impl Iterator<Item = OsString>,
) -> Result<OsString, String> {
    inline
        .or_else(|| args.next())
        .ok_or_else(|| format!("{flag} needs a value (see --help)"))
}

fn utf8<'a>(flag: &str, value: &'a std::ffi::OsStr) -> Result<&'a str, String> {
    value
        .to_str()
        .ok_or_else(|| format!("invalid value {value:?} for {flag}: not valid UTF-8"))
}

fn parse_tcp(flag: &str, value: impl AsRef<std::ffi::OsStr>) -> Result<SocketAddr, String> {
    let value = utf8(flag, value.as_ref())?;
    let invalid =
        || format!("invalid value {value:?} for {flag}: expected an address like {DEFAULT_TCP}");
    match value.parse::<Endpoint>() {
        Ok(Endpoint::Tcp(addr)) => Ok(addr),
        _ => Err(invalid()),
    }
}

fn parse_unix(flag: &str, value: OsString) -> Result<Endpoint, String> {
    let bytes = value.as_bytes();
    match bytes.strip_prefix(b"@") {
        _ if bytes.is_empty() => Err(format!("invalid value \"\" for {flag}: expected a path")),
        Some([]) => Err(format!(
            "invalid value \"@\" for {flag}: expected a path or @NAME"
        )),
        Some(name) => Ok(Endpoint::UnixAbstract(name.to_vec())),
        None => Ok(Endpoint::Unix(PathBuf::from(value))),
    }
}

/// Parses `500ms`, `5s`, `1m`, `2h`: a whole number and a unit, more than zero.
fn parse_duration(flag: &str, value: &std::ffi::OsStr) -> Result<Duration, String> {
    let text = utf8(flag, value)?;
    let invalid = |why: &str| format!("invalid value {text:?} for {flag}: {why}");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| invalid("a unit is missing (ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| invalid("expected a whole number and a unit, like 5s or 500ms"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid("unknown unit (use ms, s, m or h)")),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| invalid("too large"))?;
    if millis == 0 {
        return Err(invalid("must be more than zero"));
    }
    Ok(Duration::from_millis(millis))
}
