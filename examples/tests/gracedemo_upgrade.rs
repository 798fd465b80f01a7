//! End-to-end tests of `gracedemo` upgrades (`SIGUSR2`): requests in flight finish on the old
//! process, new ones go to the new process, over HTTP/1.1 and HTTP/2, plain and TLS.

#[allow(
    dead_code,
    reason = "shared with other test targets, which use other parts"
)]
mod util;

use std::io::Read;
use std::net::TcpStream;
use std::time::Instant;

use http::{StatusCode, Version};
use nix::sys::signal::Signal;
use testkit::TIMEOUT;
use testkit::blocking::Client;
use testkit::http::{H1, H2, Target, get_once, is_reset};
use testkit::metrics;
use testkit::procfs::group_members;

use util::demo::{Demo, ready_line};
use util::wait_for_pid_file;

const SLOW: &str = "/sleep/?duration=3s";
const ALPN_H1: &[&[u8]] = &[b"http/1.1"];
const ALPN_H2: &[&[u8]] = &[b"h2"];

fn requests(server: &str) -> String {
    format!("gracehttp_requests_total{{server=\"{server}\"}}")
}

/// A slow request on HTTP and HTTPS, an upgrade while they run, a fast request on each port
/// afterwards, twice; then a stop. Each slow request is answered by the process it reached,
/// with `Connection: close`; each fast one by the new process; every generation exits 0.
#[test]
fn slow_requests_finish_on_the_old_process_across_two_upgrades() {
    let mut demo = Demo::start("grace", &[]);
    let client = Client::new();
    let (http, https, admin) = (demo.http(), demo.https(ALPN_H1), demo.admin());
    let first = demo.pid();
    assert_eq!(client.metric(&admin, "gracehttp_generation"), Some(0));

    for round in 1..=2u64 {
        let old = demo.pid();
        let seen_http = client.metric(&admin, &requests("http-0")).unwrap_or(0);
        let seen_https = client.metric(&admin, &requests("https-0")).unwrap_or(0);
        let slow_http = client.spawn(get_once(http.clone(), SLOW.into()));
        let slow_https = client.spawn(get_once(https.clone(), SLOW.into()));
        // Both slow requests have reached the old process before it is told to upgrade.
        client.wait_metric_at_least(&admin, &requests("http-0"), seen_http + 1);
        client.wait_metric_at_least(&admin, &requests("https-0"), seen_https + 1);

        let new = demo.upgrade();
        assert_ne!(new, old);
        assert!(
            !slow_http.is_finished() && !slow_https.is_finished(),
            "round {round}: the slow requests ended before the upgrade completed"
        );
        for target in [&http, &https] {
            let fast = client.get(target, "/").expect("fast request");
            fast.assert_ok_from(new);
        }
        let metrics = client.get(&admin, "/metrics").expect("metrics").body;
        assert_eq!(
            metrics::count(&metrics, "gracehttp_generation"),
            Some(round),
            "{metrics}"
        );
        assert_eq!(
            metrics::count(&metrics, "gracehttp_process_id"),
            Some(u64::from(new))
        );

        for (port, slow) in [("http", slow_http), ("https", slow_https)] {
            let reply = slow
                .wait()
                .unwrap_or_else(|e| panic!("round {round}: slow {port}: {e:?}"));
            reply.assert_ok_from(old);
            assert!(reply.body.contains("slept for 3s"), "{reply:?}");
            assert!(
                reply.closes(),
                "round {round}: the slow {port} response of a draining process lacks \
                 `connection: close`: {reply:?}"
            );
        }
        assert_eq!(demo.exit_code(old), 0);
        wait_for_pid_file(&demo.pid_file, new);
        demo.log.wait_for(&ready_line(new, round));
    }

    let last = demo.pid();
    demo.signal(Signal::SIGTERM);
    assert_eq!(demo.exit_code(last), 0);
    let left = group_members(demo.group());
    assert!(
        left.is_empty(),
        "processes left of gracedemo (first pid {first}): {left:?}"
    );
    assert!(
        !demo.pid_file.exists(),
        "the pid file outlived the final stop"
    );
    demo.assert_no_panic();
}

/// Streams in flight on one HTTP/2 connection, over TLS (ALPN h2) and h2c, all finish on
/// the old process after an upgrade; a new connection is the new process's, and the old
/// process exits even though the client keeps its connection open.
#[test]
fn http2_streams_in_flight_finish_across_an_upgrade() {
    let mut demo = Demo::start("h2", &[]);
    let client = Client::new();
    let admin = demo.admin();
    let old = demo.pid();
    let h2 = demo.https(ALPN_H2);
    let h2c = demo.http();
    let tls_conn = client.run(H2::open(&h2)).expect("h2 over TLS");
    assert_eq!(tls_conn.handshake.alpn.as_deref(), Some(&b"h2"[..]));
    let plain_conn = client.run(H2::open(&h2c)).expect("h2c");

    const STREAMS: u64 = 4;
    let mut streams = Vec::new();
    for conn in [&tls_conn, &plain_conn] {
        for _ in 0..STREAMS {
            let conn = conn.clone();
            streams.push(client.spawn(async move { conn.get("/sleep?duration=2s").await }));
        }
    }
    client.wait_metric_at_least(&admin, &requests("https-0"), STREAMS);
    client.wait_metric_at_least(&admin, &requests("http-0"), STREAMS);

    let new = demo.upgrade();
    for (i, stream) in streams.into_iter().enumerate() {
        let reply = stream
            .wait()
            .unwrap_or_else(|e| panic!("stream {i}: {e:?}"));
        reply.assert_ok_from(old);
        assert_eq!(reply.version, Version::HTTP_2);
    }
    for target in [&h2, &h2c] {
        let fresh = client
            .run(H2::open(target))
            .expect("a new HTTP/2 connection");
        let reply = client
            .run(fresh.get("/pid"))
            .expect("request on a new connection");
        reply.assert_ok_from(new);
    }

    // The old connections are still held here: the old process must have closed them itself.
    assert_eq!(demo.exit_code(old), 0);
    for (name, conn) in [("h2", &tls_conn), ("h2c", &plain_conn)] {
        let after = client.run(conn.get("/pid"));
        assert!(
            after.is_err(),
            "{name}: the old connection still served a request after its process exited: \
             {after:?}"
        );
    }
    demo.stop(new);
}

/// `SIGUSR2` back to back, and once more as soon as the upgrade has started, start exactly one
/// new generation.
#[test]
fn upgrade_signals_back_to_back_start_one_generation() {
    let mut demo = Demo::start("twice", &[]);
    let client = Client::new();
    let old = demo.pid();
    demo.signal(Signal::SIGUSR2);
    demo.signal(Signal::SIGUSR2);
    demo.log
        .wait_for(&format!("upgrade: starting the new binary pid={old}"));
    // The old process may have handed over and exited already: ESRCH is fine here.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(old).expect("pid fits in pid_t")),
        Signal::SIGUSR2,
    );
    let new = demo.wait_handed_over(old);
    demo.wait_stopped_accepting(old);
    client
        .get(&demo.http(), "/pid")
        .expect("pid")
        .assert_ok_from(new);
    let metrics = client.get(&demo.admin(), "/metrics").expect("metrics").body;
    assert_eq!(metrics::count(&metrics, "gracehttp_generation"), Some(1));
    assert_eq!(demo.exit_code(old), 0);

    let log = demo.log.text();
    let started = log
        .matches(&format!("upgrade: starting the new binary pid={old}\n"))
        .count();
    let refused = log.matches("in progress; refused").count();
    assert_eq!(started, 1, "one upgrade starts; log:\n{log}");
    assert!(refused <= 2, "{log}");
    // A later signal is refused while the first upgrade runs, or comes after the handover (or
    // merges with the first, as pending signals do) and changes nothing.
    eprintln!("later SIGUSR2s refused: {refused}");
    assert_eq!(log.matches(" generation=1").count(), 1, "{log}");
    assert!(!log.contains(" generation=2"), "{log}");
    // Nothing but the new generation is left in the process group.
    let members = group_members(demo.group());
    assert_eq!(
        members.iter().map(|m| m.pid).collect::<Vec<_>>(),
        [new],
        "{members:?}\n{log}"
    );
    demo.stop(new);
}

/// Idle keep-alive connections of the old process, used right after the handover: each
/// request is answered (200 from the old pid, with `Connection: close`), or the connection was
/// closed cleanly before any response byte and a retry on a new connection reaches the new
/// pid. None is reset. Half the connections have been idle for longer than the drain's
/// minimum idle time (250 ms) when the drain starts, half were used just before.
#[test]
fn idle_keep_alive_connections_are_closed_cleanly_at_the_handover() {
    let mut demo = Demo::start("idle", &[]);
    let client = Client::new();
    let old = demo.pid();
    let group = |tls: bool| {
        let mut targets = vec![demo.http(), demo.http(), demo.http()];
        if tls {
            targets.push(demo.https(ALPN_H1));
        }
        targets
    };
    let open = |targets: &[Target]| -> Vec<H1> {
        targets
            .iter()
            .map(|target| {
                let mut conn = client.run(H1::open(target)).expect("connect");
                let reply = client.run(conn.get("/pid")).expect("first request");
                reply.assert_ok_from(old);
                assert!(!reply.closes(), "{reply:?}");
                conn
            })
            .collect()
    };
    let (long_targets, recent_targets) = (group(true), group(true));
    let long = open(&long_targets);
    // Let the first group idle for longer than the drain's minimum idle time (the idle time
    // is the condition under test): the server's own /sleep measures it.
    client
        .get(&demo.http(), "/sleep?duration=400ms")
        .expect("sleep")
        .assert_ok_from(old);
    let recent = open(&recent_targets);

    demo.signal(Signal::SIGUSR2);
    let new = demo.wait_handed_over(old);
    // At once, all together: the old process has just started to drain.
    let pending: Vec<_> = long
        .into_iter()
        .map(|c| ("idle > 250ms", c))
        .chain(recent.into_iter().map(|c| ("just used", c)))
        .map(|(kind, mut conn)| (kind, client.spawn(async move { conn.get("/pid").await })))
        .collect();
    let mut problems = Vec::new();
    let mut outcomes = Vec::new();
    let targets = long_targets.iter().chain(&recent_targets);
    for (i, ((kind, reply), target)) in pending.into_iter().zip(targets).enumerate() {
        let what = format!("connection {i} ({kind}, {})", target.addr);
        match reply.wait() {
            Ok(reply) => {
                outcomes.push(format!("{what}: answered by {:?}", reply.pid()));
                if reply.status != StatusCode::OK || reply.pid() != Some(old) {
                    problems.push(format!("{what}: not a 200 from the old pid: {reply:?}"));
                } else if !reply.closes() {
                    problems.push(format!(
                        "{what}: answered during the drain without `connection: close`: {reply:?}"
                    ));
                }
            }
            Err(e) if is_reset(&*e) => problems.push(format!("{what}: reset: {e:?}")),
            Err(e) => {
                outcomes.push(format!("{what}: closed ({e}), retried"));
                match client.get(target, "/pid") {
                    Ok(retry) if retry.pid() == Some(new) => {}
                    other => problems.push(format!("{what}: retry after {e:?}: {other:?}")),
                }
            }
        }
    }
    eprintln!("{outcomes:#?}");
    assert_eq!(demo.exit_code(old), 0);
    assert!(
        problems.is_empty(),
        "{problems:#?}\nlog:\n{}",
        demo.log.text()
    );
    demo.stop(new);
}

/// A client that connects and says nothing, on the plain port and after a TLS handshake,
/// cannot hold the old process: it exits about a second after the handover at most.
#[test]
fn silent_connections_do_not_hold_the_old_process() {
    let mut demo = Demo::start("silent", &[]);
    let client = Client::new();
    let admin = demo.admin();
    let old = demo.pid();
    let mut silent = TcpStream::connect_timeout(&demo.http, TIMEOUT).expect("connect");
    silent
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    // Handshake done, no request: an HTTP/1.1 connection that is new and silent.
    let (tls_silent, _) = client
        .run(demo.https(ALPN_H1).connect())
        .expect("TLS handshake");
    client.wait_metric_at_least(&admin, "gracehttp_connections_active{server=\"http-0\"}", 1);
    client.wait_metric_at_least(
        &admin,
        "gracehttp_connections_active{server=\"https-0\"}",
        1,
    );

    demo.signal(Signal::SIGUSR2);
    let new = demo.wait_handed_over(old);
    let handed_over = Instant::now();
    assert_eq!(demo.exit_code(old), 0);
    let took = handed_over.elapsed();
    eprintln!("the old process exited {took:?} after the handover");
    assert!(
        took < std::time::Duration::from_secs(3),
        "silent clients held the old process for {took:?}; log:\n{}",
        demo.log.text()
    );
    let mut rest = Vec::new();
    match silent.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "unexpected bytes: {rest:?}"),
        Err(e) => panic!("the silent connection was not closed cleanly: {e}"),
    }
    drop(tls_silent);
    let log = demo.log.text();
    let drained = log
        .lines()
        .find(|l| l.contains(&format!("drained pid={old} ")))
        .unwrap_or_else(|| panic!("no drained line for {old}:\n{log}"));
    assert!(
        drained.contains(" forced=0 "),
        "silent connections were force-closed: {drained}"
    );

    let reply = client.get(&demo.http(), "/").expect("new process");
    assert_eq!(reply.status, StatusCode::OK);
    reply.assert_ok_from(new);
    demo.stop(new);
}
