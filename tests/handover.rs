//! A real handover of TCP, unix and UDP sockets from this test process to a child process.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use grace_tests::{child_report, report_inodes, upgrading_to};
use gracenet::Endpoint;
use testkit::line::Session;
use testkit::procfs::socket_inode;
use testkit::{Proc, TIMEOUT, TempDir, which};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

/// Reads the one line a connection queued before the handover is answered with: by the child,
/// not reset.
fn answer_of(queued: impl std::io::Read, what: &str) -> String {
    let mut line = String::new();
    BufReader::new(queued)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("queued {what} connection answered, not reset: {e}"));
    line
}

#[test]
fn tcp_unix_and_udp_sockets_and_their_queued_connections_reach_the_child() {
    let dir = TempDir::new("handover").unwrap();
    let sock = dir.join("echo.sock");
    let tcp_spec = "web=tcp://127.0.0.1:0".to_owned();
    let unix_spec = format!("unix:{}", sock.display());
    let udp_spec = "udp://127.0.0.1:0".to_owned();
    let net = upgrading_to(
        NETCHILD,
        [
            "--listen",
            &tcp_spec,
            "--listen",
            &unix_spec,
            "--listen",
            &udp_spec,
            "--report-dir",
            dir.path().to_str().unwrap(),
        ],
        TIMEOUT,
    )
    .build()
    .unwrap();

    let tcp = net
        .listen(&"tcp://127.0.0.1:0".parse().unwrap(), Some("web"))
        .unwrap()
        .0
        .into_tcp()
        .unwrap();
    let unix = net.listen_unix(&sock).unwrap();
    let udp = net.listen_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let parent_inodes = vec![
        socket_inode(&tcp).unwrap(),
        socket_inode(&unix).unwrap(),
        socket_inode(&udp).unwrap(),
    ];

    // Connections that wait in the backlog while the parent never accepts.
    let mut queued_tcp = Vec::new();
    let mut queued_unix = Vec::new();
    for i in 0..20 {
        let mut t = TcpStream::connect(tcp_addr).unwrap();
        t.set_read_timeout(Some(TIMEOUT)).unwrap();
        t.write_all(format!("tcp {i}\n").as_bytes()).unwrap();
        queued_tcp.push(t);
        let mut u = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        u.write_all(format!("unix {i}\n").as_bytes()).unwrap();
        queued_unix.push(u);
    }

    let pid = net.upgrade().unwrap();
    let _child = Proc::adopt(pid);
    // The parent stops: it drops every copy of the sockets it had.
    drop((tcp, unix, udp, net));

    let answer = format!("pid {pid}\n");
    for t in queued_tcp {
        assert_eq!(answer_of(t, "TCP"), answer);
    }
    for u in queued_unix {
        assert_eq!(answer_of(u, "unix"), answer);
    }

    let report = child_report(dir.path(), pid).expect("child report");
    assert_eq!(
        report_inodes(&report),
        parent_inodes,
        "the child got the very same sockets:\n{report}"
    );
    assert_eq!(
        report.matches("cloexec=true nonblock=true").count(),
        3,
        "{report}"
    );
    assert!(report.contains("generation=1"), "{report}");

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    // Datagrams may be lost by design; a few bounded tries.
    let got = (0..10).find_map(|_| {
        client.send_to(b"hi", udp_addr).ok()?;
        let (n, _) = client.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    assert_eq!(got.as_deref(), Some(answer.as_str()));

    // New connections reach the child too, on the same ports.
    assert_eq!(
        Session::tcp(tcp_addr).unwrap().send("new").unwrap(),
        answer.trim_end()
    );
    assert_eq!(
        Session::unix(&sock).unwrap().send("new").unwrap(),
        answer.trim_end()
    );
    assert!(
        sock.exists(),
        "the parent did not unlink the socket file the child inherited"
    );
}

#[test]
fn identical_port_zero_requests_get_their_own_sockets_back_in_order() {
    let dir = TempDir::new("portzero").unwrap();
    let spec = "tcp://[::1]:0";
    let net = upgrading_to(
        NETCHILD,
        [
            "--listen",
            spec,
            "--listen",
            spec,
            "--report-dir",
            dir.path().to_str().unwrap(),
        ],
        TIMEOUT,
    )
    .build()
    .unwrap();
    let endpoint: Endpoint = spec.parse().unwrap();
    let a = net.listen(&endpoint, None).unwrap().0.into_tcp().unwrap();
    let b = net.listen(&endpoint, None).unwrap().0.into_tcp().unwrap();
    assert_ne!(a.local_addr().unwrap(), b.local_addr().unwrap());
    let inodes = vec![socket_inode(&a).unwrap(), socket_inode(&b).unwrap()];

    let pid = net.upgrade().unwrap();
    let _child = Proc::adopt(pid);
    let report = child_report(dir.path(), pid).unwrap();
    assert_eq!(report_inodes(&report), inodes, "{report}");
    for addr in [a.local_addr().unwrap(), b.local_addr().unwrap()] {
        assert_eq!(Session::tcp(addr).unwrap().pid().unwrap(), pid);
    }
}

/// The child starts with no signal blocked, whatever the parent's thread had blocked (and
/// although the child is started with every signal blocked); the parent's thread gets its
/// own mask back. (That the child reset the parent's handlers before unblocking cannot be
/// seen after `execve`, which resets them too.)
#[test]
fn the_child_starts_with_no_signal_blocked_and_the_parent_keeps_its_mask() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

    let dir = TempDir::new("signals").unwrap();
    let net = upgrading_to(
        NETCHILD,
        [
            "--listen",
            "tcp://127.0.0.1:0",
            "--report-dir",
            dir.path().to_str().unwrap(),
        ],
        TIMEOUT,
    )
    .build()
    .unwrap();
    let listener = net.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();

    // Only this test's thread: the mask is per thread.
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGUSR1);
    blocked.add(Signal::SIGTERM);
    let mut before = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut before)).unwrap();
    let upgraded = net.upgrade();
    let mut after = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), Some(&mut after)).unwrap();
    let pid = upgraded.unwrap();
    let _child = Proc::adopt(pid);
    drop((listener, net));

    assert!(after.contains(Signal::SIGUSR1) && after.contains(Signal::SIGTERM));
    assert!(
        !after.contains(Signal::SIGHUP) && !after.contains(Signal::SIGCHLD),
        "the parent's thread was left with more signals blocked than it had"
    );
    let report = child_report(dir.path(), pid).expect("child report");
    let masks = report
        .lines()
        .find_map(|l| l.strip_prefix("signals "))
        .unwrap_or_else(|| panic!("no signal state in the report:\n{report}"));
    let blocked = masks
        .split(' ')
        .find_map(|f| f.strip_prefix("blocked="))
        .unwrap_or_else(|| panic!("no blocked mask in {masks:?}"));
    assert_eq!(u64::from_str_radix(blocked, 16).unwrap(), 0, "{report}");
}

/// The new version need not use this library: any program that follows sd_listen_fds(3) and
/// writes to the readiness pipe can take over.
#[test]
fn a_child_not_written_with_the_library_takes_over() {
    let python = which("python3").expect("python3 on PATH (.ci/run installs it)");
    let dir = TempDir::new("python").unwrap();
    let script = dir.script("child.py", PYTHON_CHILD).unwrap();

    let net = upgrading_to(&python, [script.as_os_str(), "0".as_ref()], TIMEOUT)
        .build()
        .unwrap();
    let listener = net
        .listen(&"tcp://127.0.0.1:0".parse().unwrap(), Some("web"))
        .unwrap()
        .0
        .into_tcp()
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = TcpStream::connect(addr).unwrap();
    queued.set_read_timeout(Some(TIMEOUT)).unwrap();
    queued.write_all(b"hello\n").unwrap();

    let pid = net.upgrade().unwrap();
    let _child = Proc::adopt(pid);
    drop((listener, net));
    assert_eq!(
        answer_of(queued, "TCP"),
        format!("python {pid} web {}\n", addr.port())
    );
}

const PYTHON_CHILD: &str = r#"
import os, select, socket, sys, time

def fail(msg):
    sys.stderr.write("python child: " + msg + "\n")
    sys.exit(3)

pid = os.getpid()
if os.environ.get("LISTEN_PID") != str(pid):
    fail("LISTEN_PID=%r, pid %d" % (os.environ.get("LISTEN_PID"), pid))
if os.environ.get("LISTEN_FDS") != "1":
    fail("LISTEN_FDS=%r" % os.environ.get("LISTEN_FDS"))
names = os.environ.get("LISTEN_FDNAMES", "").split(":")
if names != ["web"]:
    fail("LISTEN_FDNAMES=%r" % names)
sock = socket.socket(fileno=3)
port = sock.getsockname()[1]
if sys.argv[1] != "0" and int(sys.argv[1]) != port:
    fail("port %d" % port)
ready = int(os.environ["GRACENET_READY_FD"])
os.write(ready, b"READY=1\n")
os.close(ready)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    r, _, _ = select.select([sock], [], [], 0.5)
    if not r:
        continue
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        continue
    conn.setblocking(True)
    conn.settimeout(5)
    conn.recv(64)
    conn.sendall(("python %d %s %d\n" % (pid, names[0], port)).encode())
    conn.close()
    break
"#;
