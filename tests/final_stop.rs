//! A final stop (`Net::close`) seals the listening sockets only this line of processes holds:
//! no new connection gets in, while the ones already queued can still be accepted and served,
//! so that closing the last copy resets nothing. A socket systemd handed in is never sealed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use grace_tests::upgrading_to;
use gracenet::Net;
use testkit::{Proc, TIMEOUT, TempDir, free_addr, spawn, wait_until, which};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");

/// A sealed TCP listener drops the SYN, and the client's first retry comes after a second:
/// an attempt still unanswered after this long went nowhere.
const UNANSWERED: Duration = Duration::from_millis(500);

fn fresh_net() -> Net {
    Net::builder().inherit(false).build().unwrap()
}

/// Sends `ping` on a client, accepts on the server side with `accept`, answers `pong` there and
/// checks the client reads it: the queued connection works end to end, it was not reset.
fn ping_pong<S: Read + Write>(client: &mut S, server: &mut S) {
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

#[test]
fn a_sealed_tcp_listener_takes_no_new_connection_and_still_hands_out_queued_ones() {
    let net = fresh_net();
    let listener = net.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = TcpStream::connect(addr).unwrap();
    queued.set_read_timeout(Some(UNANSWERED)).unwrap();

    net.close().unwrap();

    let late = TcpStream::connect_timeout(&addr, UNANSWERED);
    assert_eq!(
        late.as_ref().map_err(io::Error::kind).err(),
        Some(io::ErrorKind::TimedOut),
        "a connection attempt after the seal got {late:?}"
    );
    let (mut accepted, peer) = listener.accept().unwrap();
    assert_eq!(peer, queued.local_addr().unwrap());
    accepted.set_nonblocking(false).unwrap();
    accepted.set_read_timeout(Some(UNANSWERED)).unwrap();
    ping_pong(&mut queued, &mut accepted);
    // The attempt that went unanswered was never queued.
    let next = listener.accept().map(|(_, peer)| peer);
    assert_eq!(
        next.as_ref().map_err(io::Error::kind).err(),
        Some(io::ErrorKind::WouldBlock),
        "{next:?}"
    );

    // The last copy closes: the port is closed, and the served connection is unharmed.
    drop(listener);
    let after = TcpStream::connect(addr).map(|_| ());
    assert_eq!(
        after.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused)
    );
    ping_pong(&mut queued, &mut accepted);
    accepted.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    queued.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_sealed_unix_listener_refuses_at_once_and_still_hands_out_queued_ones() {
    // In the abstract namespace: a socket file would be removed by the final stop, and a
    // client would find nothing to connect to before ever reaching the socket.
    let name = format!("grace-seal-{}", std::process::id());
    let net = fresh_net();
    let listener = net.listen_unix_abstract(name.as_bytes()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = UnixStream::connect_addr(&addr).unwrap();
    queued.set_read_timeout(Some(UNANSWERED)).unwrap();

    net.close().unwrap();

    let late = UnixStream::connect_addr(&addr).map(|_| ());
    assert_eq!(
        late.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused)
    );
    let (mut accepted, _) = listener.accept().unwrap();
    accepted.set_nonblocking(false).unwrap();
    accepted.set_read_timeout(Some(UNANSWERED)).unwrap();
    ping_pong(&mut queued, &mut accepted);
    let next = listener.accept().map(|_| ());
    assert_eq!(next.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
}

#[test]
fn the_file_of_a_unix_socket_goes_with_the_final_stop_and_its_queue_is_still_served() {
    let dir = TempDir::new("seal").unwrap();
    let path = dir.join("sealed.sock");
    let net = fresh_net();
    let listener = net.listen_unix(&path).unwrap();
    let mut queued = UnixStream::connect(&path).unwrap();
    queued.set_read_timeout(Some(UNANSWERED)).unwrap();

    net.close().unwrap();

    assert!(!path.exists(), "the socket file outlived the final stop");
    let (mut accepted, _) = listener.accept().unwrap();
    accepted.set_nonblocking(false).unwrap();
    accepted.set_read_timeout(Some(UNANSWERED)).unwrap();
    ping_pong(&mut queued, &mut accepted);
}

#[test]
fn a_final_stop_during_an_upgrade_seals_nothing() {
    // The new process holds the sockets until it is gone: the close cancels it, but it is only
    // killed once the upgrade's waiting notices.
    let args = ["--mode", "hang", "--max-seconds", "30"];
    let net = upgrading_to(NETCHILD, args, Duration::from_secs(30))
        .build()
        .unwrap();
    let listener = net.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let child = net.start_process().unwrap();
    let _child = Proc::adopt(child.pid());

    net.close().unwrap();

    let during = TcpStream::connect_timeout(&addr, UNANSWERED).map(|_| ());
    assert!(
        during.is_ok(),
        "a connection attempt during the upgrade got {during:?}"
    );
    // Dropped uncommitted, the new process is killed and reaped.
    drop(child);
}

/// Runs `netchild` with `args` (through `wrapper` when given) in a process group of its own,
/// this process being a subreaper so that a successor becomes its child (and is reaped with the
/// group); returns every line of stdout, read to its end (the successor shares it), once both
/// have exited.
fn run_probe(wrapper: &[&str], args: &[&str]) -> Vec<String> {
    let (program, rest) = match wrapper.split_first() {
        Some((w, rest)) => (*w, [rest, &[NETCHILD], args].concat()),
        None => (NETCHILD, args.to_vec()),
    };
    let mut probe = spawn(program, rest);
    let trigger = wrapper.iter().find_map(|a| a.parse::<SocketAddr>().ok());
    // systemd-socket-activate starts the program on the first connection; it stays queued.
    let _first = trigger.map(|addr| {
        wait_until(TIMEOUT, || TcpStream::connect(addr).ok())
            .expect("systemd-socket-activate never listened")
    });
    let code = probe.proc.wait_exit();
    let lines: Vec<String> = probe.stdout.complete().lines().map(str::to_owned).collect();
    assert_eq!(code, Ok(0), "{lines:?}; stderr:\n{}", probe.stderr.text());
    lines
}

#[test]
fn sockets_a_predecessor_of_this_library_bound_are_sealed_by_the_successor() {
    let unix = format!("unix:@grace-sealup-{}", std::process::id());
    let lines = run_probe(
        &[],
        &[
            "--mode",
            "upgrade",
            "--child-mode",
            "seal-probe",
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            &unix,
        ],
    );
    let seals: Vec<&String> = lines.iter().filter(|l| l.starts_with("seal ")).collect();
    assert_eq!(seals.len(), 2, "{lines:?}");
    assert!(seals.iter().all(|l| l.ends_with(" sealed")), "{lines:?}");
}

#[test]
fn a_new_process_that_closes_before_it_is_ready_seals_nothing() {
    let unix = format!("unix:@grace-sealearly-{}", std::process::id());
    let lines = run_probe(
        &[],
        &[
            "--mode",
            "upgrade",
            "--child-mode",
            "close-early",
            "--probe-after-failure",
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            &unix,
        ],
    );
    assert!(lines.iter().any(|l| l.starts_with("failed ")), "{lines:?}");
    let after: Vec<&String> = lines.iter().filter(|l| l.starts_with("after ")).collect();
    assert_eq!(after.len(), 2, "{lines:?}");
    assert!(
        after.iter().all(|l| l.ends_with(" open")),
        "the parent's sockets were sealed by a new process that failed: {lines:?}"
    );
}

fn activate() -> String {
    which("systemd-socket-activate")
        .expect(
            "systemd-socket-activate on PATH: install Debian's systemd package (cargo xtask test does)",
        )
        .display()
        .to_string()
}

#[test]
fn a_socket_systemd_handed_in_is_not_sealed() {
    let activate = activate();
    let addr = free_addr().to_string();
    let listen = format!("tcp://{addr}");
    let lines = run_probe(
        &[&activate, "-l", &addr],
        &["--mode", "seal-probe", "--listen", &listen],
    );
    assert_eq!(lines, [format!("seal {listen} open")]);
}

#[test]
fn a_socket_systemd_handed_in_is_not_sealed_after_an_upgrade_either() {
    let activate = activate();
    let addr = free_addr().to_string();
    let listen = format!("tcp://{addr}");
    let lines = run_probe(
        &[&activate, "-l", &addr],
        &[
            "--mode",
            "upgrade",
            "--child-mode",
            "seal-probe",
            "--listen",
            &listen,
        ],
    );
    assert!(
        lines.iter().any(|l| l.starts_with("upgraded ")),
        "{lines:?}"
    );
    assert!(lines.contains(&format!("seal {listen} open")), "{lines:?}");
}
