//! End-to-end tests of stopping `gracedemo` (`SIGTERM`): a request in flight finishes; one
//! longer than the stop timeout is cut at the deadline, and the process still exits in time.

#[allow(
    dead_code,
    reason = "shared with other test targets, which use other parts"
)]
mod util;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use testkit::TIMEOUT;
use testkit::blocking::{Client, Pending};
use testkit::http::{BoxError, Reply, get_once};
use testkit::procfs::group_members;

use util::demo::Demo;

const ALPN_H1: &[&[u8]] = &[b"http/1.1"];

/// A request running on the client's runtime.
type InFlight = Pending<Result<Reply, BoxError>>;

/// Starts `GET path` on the HTTP and on the HTTPS port (HTTP/1.1), and waits until the server
/// counts both; returns them by port.
fn in_flight_on_both_ports(
    demo: &Demo,
    client: &Client,
    path: &str,
) -> [(&'static str, InFlight); 2] {
    let http = client.spawn(get_once(demo.http(), path.into()));
    let https = client.spawn(get_once(demo.https(ALPN_H1), path.into()));
    for server in ["http-0", "https-0"] {
        let series = format!("gracehttp_requests_total{{server=\"{server}\"}}");
        client.wait_metric_at_least(&demo.admin(), &series, 1);
    }
    [("http", http), ("https", https)]
}

/// A request in flight when `SIGTERM` arrives is answered (200, the old pid, `Connection:
/// close`), the ports close at once, and the process exits 0 without leaving its pid file.
#[test]
fn stop_finishes_the_request_in_flight_and_exits_0() {
    let mut demo = Demo::start("term", &[]);
    let client = Client::new();
    let pid = demo.pid();
    let slow = in_flight_on_both_ports(&demo, &client, "/sleep/?duration=2s");

    demo.signal(Signal::SIGTERM);
    demo.log.wait_for(&format!("draining pid={pid} active="));
    assert!(
        demo.proc(pid).is_running(),
        "the request in flight was not waited for"
    );
    // A final stop closes the ports: new clients are refused rather than left in a backlog.
    let refused = TcpStream::connect_timeout(&demo.http, TIMEOUT).map(|_| ());
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused),
        "the HTTP port still accepts connections after SIGTERM"
    );
    for (port, slow) in slow {
        let reply = slow.wait().unwrap_or_else(|e| panic!("{port}: {e:?}"));
        reply.assert_ok_from(pid);
        assert!(reply.body.contains("slept for 2s"), "{reply:?}");
        assert!(reply.closes(), "{port}: no `connection: close`: {reply:?}");
    }
    assert_eq!(demo.exit_code(pid), 0);
    assert!(!demo.pid_file.exists(), "the pid file outlived the stop");
    assert!(group_members(demo.group()).is_empty());
    let log = demo.log.text();
    assert!(
        log.contains(&format!("stopping pid={pid} reason=\"SIGTERM\"")),
        "{log}"
    );
    demo.assert_no_panic();
}

/// A request longer than the stop timeout is cut at the deadline: the client gets no complete
/// response, and the process exits within the stop and kill timeouts (plus a margin).
#[test]
fn stop_cuts_a_request_longer_than_the_stop_timeout() {
    let mut demo = Demo::start(
        "cut",
        &["--stop-timeout", "500ms", "--kill-timeout", "500ms"],
    );
    let client = Client::new();
    let pid = demo.pid();
    let endless = in_flight_on_both_ports(&demo, &client, "/sleep/?duration=30s");

    let signalled = Instant::now();
    demo.signal(Signal::SIGTERM);
    let code = demo.exit_code(pid);
    let took = signalled.elapsed();
    eprintln!("exited {took:?} after SIGTERM with two requests of 30s in flight");
    assert_eq!(code, 0);
    assert!(
        took >= Duration::from_millis(500),
        "exited after {took:?}, before the stop timeout of 500ms"
    );
    assert!(
        took < Duration::from_secs(5),
        "stop timeout 500ms + kill timeout 500ms, but the exit took {took:?}"
    );
    for (port, endless) in endless {
        let cut = endless.wait();
        assert!(
            cut.is_err(),
            "{port}: a 30s request got a complete response from a process stopped with a \
             500ms stop timeout: {cut:?}"
        );
    }
    let log = demo.log.text();
    let drained = log
        .lines()
        .find(|l| l.contains(&format!("drained pid={pid} ")))
        .unwrap_or_else(|| panic!("no drained line:\n{log}"));
    assert!(drained.contains(" forced=2 "), "{drained}");
    assert!(group_members(demo.group()).is_empty());
    demo.assert_no_panic();
}

/// A second `SIGINT` while draining force-closes what is left at once, long before the stop
/// timeout (30 s by default).
#[test]
fn a_second_sigint_forces_the_stop() {
    let mut demo = Demo::start("force", &[]);
    let client = Client::new();
    let admin = demo.admin();
    let pid = demo.pid();
    let endless = client.spawn(get_once(demo.http(), "/sleep/?duration=60s".into()));
    client.wait_metric_at_least(&admin, "gracehttp_requests_total{server=\"http-0\"}", 1);

    demo.signal(Signal::SIGINT);
    demo.log.wait_for(&format!("draining pid={pid} active="));
    assert!(demo.proc(pid).is_running(), "the first SIGINT did not wait");
    let forced_at = Instant::now();
    demo.signal(Signal::SIGINT);
    assert_eq!(demo.exit_code(pid), 0);
    let took = forced_at.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the second SIGINT did not force: exit took {took:?}"
    );
    assert!(endless.wait().is_err(), "the 60s request was not cut");
    // The log is read by another thread: wait for its last line before looking at it whole.
    demo.log.wait_for(&format!("drained pid={pid} "));
    let log = demo.log.text();
    assert!(log.contains("force-closing"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("drained pid={pid} ")) && l.contains(" forced=1 ")),
        "{log}"
    );
    assert!(group_members(demo.group()).is_empty());
}
