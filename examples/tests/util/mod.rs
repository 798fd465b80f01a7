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

/// Helpers for the `gracedemo` tests: a launcher, HTTP/1.1 and HTTP/2 clients (plain and TLS)
/// on a runtime of their own, test certificates, and process-group checks. The echo tests
/// compile this module too, and use none of it.
#[allow(
    dead_code,
    reason = "each gracedemo test target uses a different part; the echo tests use none"
)]
pub(crate) mod demo {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, Request, StatusCode, Version, header};
    use http_body_util::{BodyExt, Empty};
    use hyper::client::conn::{http1, http2};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use nix::sys::signal::Signal;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::client::Resumption;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    use super::{Output, Proc, TIMEOUT, TempDir, free_addr, spawn, wait_until};

    impl Output {
        /// Waits until `needle` has been written at least `count` times; panics with the whole
        /// output if that does not happen within [`TIMEOUT`].
        pub(crate) fn wait_for_count(&self, needle: &str, count: usize) {
            assert!(
                self.wait(|c| c.text.matches(needle).count() >= count),
                "{needle:?} not written {count} times within {TIMEOUT:?}; output:\n{}",
                self.text()
            );
        }
    }

    /// The program under test.
    pub(crate) const GRACEDEMO: &str = env!("CARGO_BIN_EXE_gracedemo");

    /// Any error of a client operation; [`is_reset`] tells a connection reset apart.
    pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

    // -----------------------------------------------------------------------------------------
    // Certificates

    /// A test certificate authority: the only root the clients trust.
    pub(crate) struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pub(crate) der: CertificateDer<'static>,
    }

    /// A leaf certificate for `localhost` and 127.0.0.1, with its key, in PEM.
    pub(crate) struct Leaf {
        pub(crate) cert_pem: String,
        pub(crate) key_pem: String,
        pub(crate) der: CertificateDer<'static>,
    }

    impl Ca {
        pub(crate) fn new() -> Ca {
            let key = KeyPair::generate().expect("generate the CA key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "gracedemo test CA");
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).expect("self-sign the CA");
            Ca {
                der: cert.der().clone(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A new leaf (new key, new serial) signed by this CA.
        pub(crate) fn leaf(&self) -> Leaf {
            let key = KeyPair::generate().expect("generate a leaf key");
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .expect("leaf params");
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
            Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                der: cert.der().clone(),
            }
        }
    }

    /// Client configurations trusting only `ca`, offering `alpn`, and never resuming a
    /// session, so that every handshake shows the certificate the server chose for it.
    pub(crate) fn client_config(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).expect("add the test CA");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }

    // -----------------------------------------------------------------------------------------
    // The server

    /// A running `gracedemo` with one HTTP, one HTTPS and the admin port, a pid file and
    /// certificate files in a temp dir; every generation it starts is tracked here. Dropping it
    /// kills and reaps all of them.
    pub(crate) struct Demo {
        /// Every generation, the spawned one first (it leads the process group, so that dropping
        /// it kills the others too).
        procs: Vec<Proc>,
        /// The stderr shared by every generation.
        pub(crate) log: Output,
        pub(crate) http: SocketAddr,
        pub(crate) https: SocketAddr,
        pub(crate) admin: SocketAddr,
        pub(crate) pid_file: PathBuf,
        pub(crate) cert: PathBuf,
        pub(crate) key: PathBuf,
        pub(crate) ca: Ca,
        /// The certificate the server was started with.
        pub(crate) leaf: Leaf,
        pub(crate) dir: TempDir,
    }

    /// Writes `leaf` to the certificate and key paths (each file replaced by a rename, the way
    /// a deploy or certbot does).
    pub(crate) fn write_leaf(cert: &Path, key: &Path, leaf: &Leaf) {
        replace_file(cert, leaf.cert_pem.as_bytes());
        replace_file(key, leaf.key_pem.as_bytes());
    }

    /// Replaces `path` by a file with `bytes`, atomically.
    pub(crate) fn replace_file(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).expect("write a temp file");
        std::fs::rename(&tmp, path).expect("rename it into place");
    }

    impl Demo {
        /// Starts `gracedemo` with `extra` flags and waits until it is ready.
        pub(crate) fn start(tag: &str, extra: &[&str]) -> Demo {
            Demo::start_with(tag, |_| PathBuf::from(GRACEDEMO), extra)
        }

        /// Starts the program that `program` returns (given the temp dir, where it may make a
        /// symlink) with `extra` flags, and waits until it is ready.
        pub(crate) fn start_with(
            tag: &str,
            program: impl FnOnce(&TempDir) -> PathBuf,
            extra: &[&str],
        ) -> Demo {
            let dir = TempDir::new(tag);
            let ca = Ca::new();
            let leaf = ca.leaf();
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            write_leaf(&cert, &key, &leaf);
            let pid_file = dir.path().join("gracedemo.pid");
            let (http, https, admin) = (free_addr(), free_addr(), free_addr());
            let program = program(&dir);
            let mut args: Vec<String> = [
                "--http",
                &http.to_string(),
                "--https",
                &https.to_string(),
                "--admin",
                &admin.to_string(),
                "--cert",
                &cert.to_string_lossy(),
                "--key",
                &key.to_string_lossy(),
                "--pid-file",
                &pid_file.to_string_lossy(),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            let server = spawn(&program, &args);
            let pid = server.proc.pid();
            let demo = Demo {
                procs: vec![server.proc],
                log: server.stderr,
                http,
                https,
                admin,
                pid_file,
                cert,
                key,
                ca,
                leaf,
                dir,
            };
            demo.log.wait_for(&ready_line(pid, 0));
            super::wait_for_pid_file(&demo.pid_file, pid);
            demo
        }

        /// The pid of the newest generation.
        pub(crate) fn pid(&self) -> u32 {
            self.procs.last().expect("one process at least").pid()
        }

        /// The generation with this pid.
        pub(crate) fn proc(&mut self, pid: u32) -> &mut Proc {
            self.procs
                .iter_mut()
                .find(|p| p.pid() == pid)
                .unwrap_or_else(|| panic!("pid {pid} is not a generation of this server"))
        }

        /// Sends `signal` to the newest generation.
        pub(crate) fn signal(&self, signal: Signal) {
            self.procs
                .last()
                .expect("one process at least")
                .signal(signal);
        }

        /// The process group of every generation (and of every process they start).
        pub(crate) fn group(&self) -> u32 {
            self.procs[0].pid()
        }

        /// The exit code of generation `pid`; panics with the log if it does not exit within
        /// [`TIMEOUT`] or dies by a signal.
        pub(crate) fn exit_code(&mut self, pid: u32) -> i32 {
            let result = self.proc(pid).wait_exit();
            result.unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log.text()))
        }

        /// Waits for the log line of generation `old` handing over, and returns the new pid,
        /// which is tracked from now on. Sends nothing: see [`Demo::upgrade`].
        pub(crate) fn wait_handed_over(&mut self, old: u32) -> u32 {
            let prefix =
                format!("upgrade done: the new process serves; draining pid={old} new_pid=");
            self.log.wait_for(&prefix);
            let text = self.log.text();
            let new = text
                .lines()
                .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|pid| pid.parse().ok())
                .unwrap_or_else(|| panic!("no new pid after {prefix:?} in:\n{text}"));
            self.procs.push(Proc::adopt(new));
            new
        }

        /// Waits until generation `old` has stopped accepting: from then on every new
        /// connection is the new generation's.
        pub(crate) fn wait_stopped_accepting(&self, old: u32) {
            self.log.wait_for(&format!("draining pid={old} active="));
        }

        /// `SIGUSR2` to the newest generation; returns the new pid once the old one has stopped
        /// accepting.
        pub(crate) fn upgrade(&mut self) -> u32 {
            let old = self.pid();
            self.signal(Signal::SIGUSR2);
            let new = self.wait_handed_over(old);
            self.wait_stopped_accepting(old);
            new
        }

        pub(crate) fn http(&self) -> Target {
            Target::plain(self.http)
        }

        pub(crate) fn https(&self, alpn: &[&[u8]]) -> Target {
            Target::tls(self.https, client_config(&self.ca.der, alpn))
        }

        pub(crate) fn admin(&self) -> Target {
            Target::plain(self.admin)
        }

        /// Checks that the log holds no panic.
        pub(crate) fn assert_no_panic(&self) {
            let log = self.log.text();
            assert!(!log.contains("panicked"), "a process panicked:\n{log}");
        }
    }

    /// The log line a generation writes once every server accepts.
    pub(crate) fn ready_line(pid: u32, generation: u64) -> String {
        format!("ready pid={pid} generation={generation}")
    }

    // -----------------------------------------------------------------------------------------
    // Processes

    /// The processes (pid, state letter) in process group `pgid`, zombies included.
    pub(crate) fn group_members(pgid: u32) -> Vec<(u32, char)> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process can end between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // After the command name in parentheses: state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
            let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
            if pgrp == Some(pgid) {
                found.push((pid, state));
            }
        }
        found
    }

    /// Whether a process with this pid exists (a zombie counts).
    pub(crate) fn process_exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    // -----------------------------------------------------------------------------------------
    // Clients

    /// A runtime for the clients, so that tests stay synchronous (and can block on the
    /// process helpers) while requests run in the background.
    pub(crate) struct Client {
        rt: tokio::runtime::Runtime,
    }

    /// A request running on the [`Client`]'s runtime.
    pub(crate) struct Pending<T> {
        task: tokio::task::JoinHandle<T>,
        rt: tokio::runtime::Handle,
    }

    impl<T> Pending<T> {
        /// Its result; panics if it takes longer than [`TIMEOUT`].
        pub(crate) fn wait(self) -> T {
            match self
                .rt
                .block_on(async { tokio::time::timeout(TIMEOUT, self.task).await })
            {
                Ok(Ok(value)) => value,
                Ok(Err(e)) => panic!("client task failed: {e}"),
                Err(_) => panic!("client task did not finish within {TIMEOUT:?}"),
            }
        }

        pub(crate) fn is_finished(&self) -> bool {
            self.task.is_finished()
        }
    }

    impl Client {
        pub(crate) fn new() -> Client {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("client runtime");
            Client { rt }
        }

        /// Runs `fut` to its end, at most [`TIMEOUT`].
        pub(crate) fn run<F: Future>(&self, fut: F) -> F::Output {
            self.rt
                .block_on(async { tokio::time::timeout(TIMEOUT, fut).await })
                .unwrap_or_else(|_| panic!("client operation did not finish within {TIMEOUT:?}"))
        }

        /// Runs `fut` in the background.
        pub(crate) fn spawn<F>(&self, fut: F) -> Pending<F::Output>
        where
            F: Future + Send + 'static,
            F::Output: Send + 'static,
        {
            Pending {
                task: self.rt.spawn(fut),
                rt: self.rt.handle().clone(),
            }
        }

        /// `GET path` on a new HTTP/1.1 connection.
        pub(crate) fn get(&self, target: &Target, path: &str) -> Result<Reply, BoxError> {
            self.run(get_once(target.clone(), path.to_owned()))
        }

        /// The admin port's metric `name` (with its labels, if any, as written).
        pub(crate) fn metric(&self, admin: &Target, name: &str) -> Option<u64> {
            let reply = self.get(admin, "/metrics").ok()?;
            metric(&reply.body, name)
        }

        /// Waits until the admin port's metric `name` is at least `value`.
        pub(crate) fn wait_metric_at_least(&self, admin: &Target, name: &str, value: u64) {
            let mut last = None;
            let reached = wait_until(TIMEOUT, || {
                last = self.metric(admin, name);
                last.filter(|&v| v >= value)
            });
            assert!(
                reached.is_some(),
                "metric {name} did not reach {value} within {TIMEOUT:?}; last: {last:?}"
            );
        }
    }

    /// The value of `name` (labels included, as rendered) in a Prometheus text.
    pub(crate) fn metric(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Where to connect, and with which TLS configuration (`None`: plain TCP).
    #[derive(Clone)]
    pub(crate) struct Target {
        pub(crate) addr: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
    }

    /// A client stream: TCP or TLS over TCP.
    pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

    /// What a TLS handshake showed.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Handshake {
        /// The leaf certificate the server sent.
        pub(crate) leaf: Option<CertificateDer<'static>>,
        /// The protocol chosen by ALPN.
        pub(crate) alpn: Option<Vec<u8>>,
    }

    impl Target {
        pub(crate) fn plain(addr: SocketAddr) -> Target {
            Target { addr, tls: None }
        }

        pub(crate) fn tls(addr: SocketAddr, config: Arc<ClientConfig>) -> Target {
            Target {
                addr,
                tls: Some(config),
            }
        }

        fn scheme(&self) -> &'static str {
            if self.tls.is_some() { "https" } else { "http" }
        }

        /// Connects, and for TLS completes the handshake.
        pub(crate) async fn connect(&self) -> Result<(Box<dyn Stream>, Handshake), BoxError> {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let Some(config) = &self.tls else {
                return Ok((Box::new(tcp), Handshake::default()));
            };
            let name = ServerName::try_from("localhost")?;
            let tls = TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await?;
            let (_, conn) = tls.get_ref();
            let shown = Handshake {
                leaf: conn.peer_certificates().and_then(|c| c.first()).cloned(),
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            };
            Ok((Box::new(tls), shown))
        }
    }

    /// A response, read to its end.
    #[derive(Debug)]
    pub(crate) struct Reply {
        pub(crate) status: StatusCode,
        pub(crate) version: Version,
        pub(crate) headers: HeaderMap,
        pub(crate) body: String,
    }

    impl Reply {
        async fn read(res: http::Response<hyper::body::Incoming>) -> Result<Reply, BoxError> {
            let (parts, body) = res.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Reply {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }

        /// The pid the body names: `/pid`'s number, or "... from pid N".
        pub(crate) fn pid(&self) -> Option<u32> {
            let body = self.body.trim();
            if let Ok(pid) = body.parse() {
                return Some(pid);
            }
            let (_, rest) = body.split_once("from pid ")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        }

        /// Whether the response says `Connection: close`.
        pub(crate) fn closes(&self) -> bool {
            self.headers.get_all(header::CONNECTION).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.to_ascii_lowercase().contains("close"))
            })
        }

        /// Asserts a 200 whose body names `pid`.
        pub(crate) fn assert_ok_from(&self, pid: u32) {
            assert_eq!(self.status, StatusCode::OK, "{self:?}");
            assert_eq!(
                self.pid(),
                Some(pid),
                "answered by another process: {self:?}"
            );
        }
    }

    /// Whether a connection reset (ECONNRESET) is among the causes of `e`.
    pub(crate) fn is_reset(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cause = Some(e);
        while let Some(err) = cause {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionReset {
                    return true;
                }
            }
            cause = err.source();
        }
        false
    }

    /// An HTTP/1.1 connection.
    pub(crate) struct H1 {
        sender: http1::SendRequest<Empty<Bytes>>,
        pub(crate) handshake: Handshake,
    }

    impl H1 {
        pub(crate) async fn open(target: &Target) -> Result<H1, BoxError> {
            let (io, handshake) = target.connect().await?;
            let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(conn);
            Ok(H1 { sender, handshake })
        }

        /// `GET path` on this connection.
        pub(crate) async fn get(&mut self, path: &str) -> Result<Reply, BoxError> {
            let req = Request::get(path)
                .header(header::HOST, "localhost")
                .body(Empty::new())?;
            let res = self.sender.send_request(req).await?;
            Reply::read(res).await
        }
    }

    /// An HTTP/2 connection (h2 by ALPN over TLS, or h2c with prior knowledge); cloning it
    /// gives another handle on the same connection.
    #[derive(Clone)]
    pub(crate) struct H2 {
        sender: http2::SendRequest<Empty<Bytes>>,
        scheme: &'static str,
        addr: SocketAddr,
        pub(crate) handshake: Handshake,
    }

    impl H2 {
        pub(crate) async fn open(target: &Target) -> Result<H2, BoxError> {
            let (io, handshake) = target.connect().await?;
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
            tokio::spawn(conn);
            Ok(H2 {
                sender,
                scheme: target.scheme(),
                addr: target.addr,
                handshake,
            })
        }

        /// `GET path` as a new stream of this connection.
        pub(crate) async fn get(&self, path: &str) -> Result<Reply, BoxError> {
            let mut sender = self.sender.clone();
            sender.ready().await?;
            let uri = format!("{}://localhost:{}{path}", self.scheme, self.addr.port());
            let res = sender
                .send_request(Request::get(uri).body(Empty::new())?)
                .await?;
            Reply::read(res).await
        }

        pub(crate) fn is_closed(&self) -> bool {
            self.sender.is_closed()
        }
    }

    /// `GET path` on a new HTTP/1.1 connection.
    pub(crate) async fn get_once(target: Target, path: String) -> Result<Reply, BoxError> {
        H1::open(&target).await?.get(&path).await
    }

    /// Requests `path` on new connections, one after another with `pause` between them,
    /// until `stop` is set; returns every outcome (the pid, or what failed).
    pub(crate) async fn trickle(
        target: Target,
        path: &'static str,
        pause: Duration,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Vec<Result<u32, String>> {
        let mut outcomes = Vec::new();
        // Bounded: at most TIMEOUT's worth of requests at the pause.
        let most = (TIMEOUT.as_millis() / pause.as_millis().max(1)) as usize * 3;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && outcomes.len() < most {
            let outcome =
                match tokio::time::timeout(TIMEOUT, get_once(target.clone(), path.into())).await {
                    Ok(Ok(reply)) if reply.status == StatusCode::OK => {
                        reply.pid().ok_or_else(|| format!("no pid in {reply:?}"))
                    }
                    Ok(Ok(reply)) => Err(format!("{reply:?}")),
                    Ok(Err(e)) => Err(format!("{e:?}")),
                    Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
                };
            outcomes.push(outcome);
            tokio::time::sleep(pause).await;
        }
        outcomes
    }
}
