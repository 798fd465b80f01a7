//! End-to-end tests of `gracedemo`'s certificate reload (`SIGHUP`): new handshakes get the new
//! certificate without a restart; a broken file keeps the last good one.

#[allow(
    dead_code,
    reason = "shared with other test targets, which use other parts"
)]
mod util;

use nix::sys::signal::Signal;
use rustls::pki_types::CertificateDer;
use testkit::blocking::Client;
use testkit::fs::replace_file;
use testkit::http::{H1, Target};
use testkit::{TIMEOUT, wait_until};

use util::demo::Demo;

const ALPN_H1: &[&[u8]] = &[b"http/1.1"];

/// The leaf certificate a new handshake shows.
fn leaf_shown(client: &Client, target: &Target) -> CertificateDer<'static> {
    let (_, handshake) = client.run(target.connect()).expect("TLS handshake");
    handshake.leaf.expect("the server sent a certificate")
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_the_last_good_one() {
    let mut demo = Demo::start("hup", &[]);
    let client = Client::new();
    let https = demo.https(ALPN_H1);
    let pid = demo.pid();
    assert_eq!(leaf_shown(&client, &https), demo.leaf.der);
    // A connection made with the first certificate, kept open across the reloads.
    let mut before = client.run(H1::open(&https)).expect("connect");
    client
        .run(before.get("/pid"))
        .expect("request")
        .assert_ok_from(pid);

    // A new certificate (and key) at the same paths.
    let second = demo.ca.leaf().unwrap();
    second.write(&demo.cert, &demo.key).unwrap();
    demo.signal(Signal::SIGHUP);
    let mut last = None;
    let switched = wait_until(TIMEOUT, || {
        let shown = leaf_shown(&client, &https);
        let done = shown == second.der;
        last = Some(shown);
        done.then_some(())
    });
    assert!(
        switched.is_some(),
        "new handshakes still get {} certificate {TIMEOUT:?} after SIGHUP; log:\n{}",
        if last.as_ref() == Some(&demo.leaf.der) {
            "the first"
        } else {
            "an unknown"
        },
        demo.log.text()
    );
    demo.log
        .wait_for(&format!("certificate reloaded pid={pid} server=https-0"));
    client
        .get(&https, "/pid")
        .expect("request after the reload")
        .assert_ok_from(pid);
    client
        .run(before.get("/pid"))
        .expect("the connection opened before the reload")
        .assert_ok_from(pid);

    // A certificate file of garbage: the reload fails, and the second certificate stays.
    replace_file(&demo.cert, b"\x00\x01 this is not PEM \xff\n").unwrap();
    demo.signal(Signal::SIGHUP);
    demo.log.wait_for(&format!(
        "certificate reload failed; keeping the old one pid={pid}"
    ));
    assert_eq!(leaf_shown(&client, &https), second.der);
    client.wait_metric_at_least(&demo.admin(), "gracehttp_tls_reloads_failed_total", 1);

    // A valid certificate with the wrong key: refused too.
    let third = demo.ca.leaf().unwrap();
    replace_file(&demo.cert, third.cert_pem.as_bytes()).unwrap();
    demo.signal(Signal::SIGHUP);
    demo.log.wait_for_count(
        &format!("certificate reload failed; keeping the old one pid={pid}"),
        2,
    );
    assert_eq!(leaf_shown(&client, &https), second.der);
    client
        .get(&https, "/pid")
        .expect("request after failed reloads")
        .assert_ok_from(pid);
    client
        .get(&demo.http(), "/pid")
        .expect("plain HTTP")
        .assert_ok_from(pid);

    assert!(demo.proc(pid).is_running());
    demo.signal(Signal::SIGTERM);
    assert_eq!(demo.exit_code(pid), 0);
    let log = demo.log.text();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("certificate reload failed"))
        .collect();
    assert!(
        failures[0].contains(&demo.cert.display().to_string()),
        "the failure does not name the file: {}",
        failures[0]
    );
    assert!(
        failures[1].contains("does not belong"),
        "the failure does not say why: {}",
        failures[1]
    );
    assert_eq!(
        log.matches(" ready pid=").count(),
        1,
        "SIGHUP restarted:\n{log}"
    );
    demo.assert_no_panic();
}
