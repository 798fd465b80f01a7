//! The `gracedemo` launcher: a running server with an HTTP, an HTTPS and an admin port, a pid
//! file and certificate files in a temp dir, every generation it starts tracked (and killed and
//! reaped with the first one's process group), and the log lines the tests wait for.

use std::net::SocketAddr;
use std::path::PathBuf;

use nix::sys::signal::Signal;
use testkit::certs::{Ca, Leaf};
use testkit::http::Target;
use testkit::{Output, Proc, TempDir, free_addr, spawn};

use super::{assert_no_panic, wait_for_pid_file};

/// The program under test.
pub(crate) const GRACEDEMO: &str = env!("CARGO_BIN_EXE_gracedemo");

/// A running `gracedemo`. Dropping it kills and reaps every generation.
pub(crate) struct Demo {
    /// Every generation, the spawned one first (it leads the process group, so that dropping it
    /// kills the others too).
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

impl Demo {
    /// Starts `gracedemo` with `extra` flags and waits until it is ready.
    pub(crate) fn start(tag: &str, extra: &[&str]) -> Demo {
        Demo::start_with(tag, |_| PathBuf::from(GRACEDEMO), extra)
    }

    /// Starts the program that `program` returns (given the temp dir, where it may make a
    /// symlink or a wrapper script) with `extra` flags, and waits until it is ready.
    pub(crate) fn start_with(
        tag: &str,
        program: impl FnOnce(&TempDir) -> PathBuf,
        extra: &[&str],
    ) -> Demo {
        let dir = TempDir::new(tag).expect("a temp dir");
        let ca = Ca::new().expect("a test CA");
        let leaf = ca.leaf().expect("a leaf certificate");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        leaf.write(&cert, &key).expect("the certificate files");
        let pid_file = dir.join("gracedemo.pid");
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
        wait_for_pid_file(&demo.pid_file, pid);
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
    /// [`TIMEOUT`](testkit::TIMEOUT) or dies by a signal.
    pub(crate) fn exit_code(&mut self, pid: u32) -> i32 {
        let result = self.proc(pid).wait_exit();
        result.unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log.text()))
    }

    /// Waits for the log line of generation `old` handing over, and returns the new pid, which
    /// is tracked from now on. Sends nothing: see [`Demo::upgrade`].
    pub(crate) fn wait_handed_over(&mut self, old: u32) -> u32 {
        let prefix = format!("upgrade done: the new process serves; draining pid={old} new_pid=");
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

    /// Waits until generation `old` has stopped accepting: from then on every new connection
    /// is the new generation's.
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

    /// `SIGTERM` to generation `pid`, the newest, and checks that it exits 0 and that no
    /// process of the server panicked.
    pub(crate) fn stop(&mut self, pid: u32) {
        assert_eq!(pid, self.pid(), "only the newest generation is stopped");
        self.signal(Signal::SIGTERM);
        assert_eq!(self.exit_code(pid), 0);
        self.assert_no_panic();
    }

    pub(crate) fn http(&self) -> Target {
        Target::plain(self.http)
    }

    pub(crate) fn https(&self, alpn: &[&[u8]]) -> Target {
        let config =
            testkit::tls::client_config(&self.ca.der, alpn).expect("a client config for the CA");
        Target::tls(self.https, config)
    }

    pub(crate) fn admin(&self) -> Target {
        Target::plain(self.admin)
    }

    /// Checks that the log holds no panic.
    pub(crate) fn assert_no_panic(&self) {
        assert_no_panic(&self.log.text());
    }
}

/// The log line a generation writes once every server accepts.
pub(crate) fn ready_line(pid: u32, generation: u64) -> String {
    format!("ready pid={pid} generation={generation}")
}
