//! End-to-end tests of `gracedemo` against bad input: flags and files it cannot start with, and
//! garbage on its ports.

#[allow(
    dead_code,
    reason = "shared with other test targets, which use other parts"
)]
mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{StatusCode, Version};
use rustls::pki_types::ServerName;
use testkit::blocking::Client;
use testkit::certs::Ca;
use testkit::http::H2;
use testkit::procfs::group_members;
use testkit::tls::client_config;
use testkit::{TIMEOUT, TempDir, free_addr, spawn};

use util::assert_no_panic;
use util::demo::{Demo, GRACEDEMO};

/// Runs `gracedemo` with `args` and returns its exit code and stderr.
fn run(args: &[String]) -> (i32, String) {
    let demo = spawn(GRACEDEMO, args);
    let group = demo.proc.pid();
    let done = demo.finish();
    assert!(group_members(group).is_empty(), "{args:?}");
    (done.code, done.stderr)
}

/// Checks one failed start: the exit code, one line on stderr that starts with the program's
/// name and names each of `named`, and no panic. Returns what is wrong, if anything.
fn check_refused(args: &[String], code: i32, named: &[&str]) -> Result<(), String> {
    let (got, stderr) = run(args);
    assert_no_panic(&stderr);
    let mut wrong = Vec::new();
    if got != code {
        wrong.push(format!("exit code {got}, expected {code}"));
    }
    if stderr.lines().count() != 1 {
        wrong.push(format!(
            "{} lines on stderr, expected 1",
            stderr.lines().count()
        ));
    }
    let last = stderr.lines().last().unwrap_or_default();
    if !last.starts_with("gracedemo: ") {
        wrong.push("the reason does not start with \"gracedemo: \"".to_owned());
    }
    for name in named {
        if !last.contains(name) {
            wrong.push(format!("{name:?} not named"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}; stderr:\n{stderr}", wrong.join(", ")))
    }
}

/// Runs every case, then fails with all that went wrong.
fn assert_all(results: impl IntoIterator<Item = Result<(), String>>) {
    let wrong: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        wrong.is_empty(),
        "{} case(s) failed:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    let admin = free_addr().to_string();
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--bogus"], &["--bogus"]),
        (&["--http", "notanaddr"], &["--http", "notanaddr"]),
        (&["--http"], &["--http"]),
        (
            &["--stop-timeout", "5parsecs"],
            &["--stop-timeout", "5parsecs"],
        ),
        (&["--https", "127.0.0.1:1"], &["--https", "--cert"]),
        (&["stray"], &["stray"]),
    ];
    assert_all(cases.iter().map(|(args, named)| {
        let mut args = strings(args);
        args.extend(["--admin".to_owned(), admin.clone()]);
        check_refused(&args, 2, named)
    }));
}

#[test]
fn start_up_errors_exit_1_with_one_line_naming_the_problem() {
    let dir = TempDir::new("bad").unwrap();
    let ca = Ca::new().unwrap();
    let (good, other) = (ca.leaf().unwrap(), ca.leaf().unwrap());
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let other_key = dir.join("other-key.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&cert, &good.cert_pem).expect("write cert");
    std::fs::write(&key, &good.key_pem).expect("write key");
    std::fs::write(&other_key, &other.key_pem).expect("write key");
    std::fs::write(&garbage, b"\x16\x03\x01 not PEM at all\n").expect("write garbage");
    let missing = dir.join("missing.pem");
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        vec![
            "--http".to_owned(),
            free_addr().to_string(),
            "--https".to_owned(),
            free_addr().to_string(),
            "--admin".to_owned(),
            free_addr().to_string(),
            "--cert".to_owned(),
            path(cert),
            "--key".to_owned(),
            path(key),
        ]
    };

    // An address in use, for the first server, a later one, and the admin port.
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let (free1, free2) = (free_addr().to_string(), free_addr().to_string());
    let mut results = Vec::new();
    for args in [
        ["--http", &busy_addr, "--admin", &free1].as_slice(),
        ["--http", &free1, "--http", &busy_addr, "--admin", &free2].as_slice(),
        ["--http", &free1, "--admin", &busy_addr].as_slice(),
    ] {
        results.push(check_refused(&strings(args), 1, &[&busy_addr]));
    }
    // Certificates and keys that cannot be used.
    results.extend([
        check_refused(&tls(&missing, &key), 1, &[&path(&missing)]),
        check_refused(&tls(&cert, &missing), 1, &[&path(&missing)]),
        check_refused(&tls(dir.path(), &key), 1, &[&path(dir.path())]),
        check_refused(&tls(&garbage, &key), 1, &[&path(&garbage)]),
        check_refused(&tls(&cert, &garbage), 1, &[&path(&garbage)]),
        check_refused(&tls(&cert, &other_key), 1, &[&path(&other_key)]),
    ]);
    assert_all(results);
    drop(busy);
}

/// A tiny xorshift generator: random bytes without a dependency, reproducible by its seed.
struct Noise(u64);

impl Noise {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0.to_le_bytes()[3]
            })
            .collect()
    }
}

/// The first bytes a TLS client sends: a whole ClientHello record.
fn client_hello(config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from(testkit::tls::SERVER_NAME).expect("name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

/// Sends `bytes`, closes the sending half, and reads until the server closes. Returns what the
/// server sent; panics if it keeps the connection open for [`TIMEOUT`].
fn send_garbage(addr: std::net::SocketAddr, bytes: &[u8], what: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    // The server may give up and close before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // A close with unread input is a reset: still a close.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the connection was not closed: {e}"),
    }
    answer
}

#[test]
fn garbage_on_the_ports_closes_the_connection_and_nothing_else() {
    let mut demo = Demo::start("garbage", &[]);
    let client = Client::new();
    let pid = demo.pid();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("noise seed {seed}");
    let mut noise = Noise(seed);
    let hello = client_hello(client_config(&demo.ca.der, &[b"h2", b"http/1.1"]).unwrap());

    let mut long_line = b"GET /".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 1 << 20));
    let mut h2c_garbage = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2c_garbage.extend(noise.bytes(4096));
    let http_cases: [(&str, Vec<u8>); 4] = [
        ("random bytes", noise.bytes(4096)),
        (
            "a request line with no end",
            b"GET /pid HTTP/1.1\r\nHost: x".to_vec(),
        ),
        ("a 1 MiB request line", long_line),
        (
            "a bad request line",
            b"\x01\x02 / HTTP/9.9\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in &http_cases {
        let answer = send_garbage(demo.http, bytes, what);
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
            "HTTP port, {what}: answered {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // HTTP/2 answers garbage frames with frames of its own (SETTINGS, GOAWAY), then closes.
    let answer = send_garbage(demo.http, &h2c_garbage, "an h2c preface then garbage");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "h2c garbage answered in HTTP/1: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let mut hello_then_noise = hello.clone();
    hello_then_noise.extend(noise.bytes(4096));
    let tls_cases: [(&str, Vec<u8>); 4] = [
        ("random bytes", noise.bytes(4096)),
        ("half a ClientHello", hello[..hello.len() / 2].to_vec()),
        ("a ClientHello then garbage", hello_then_noise),
        (
            "plain HTTP",
            b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in &tls_cases {
        send_garbage(demo.https, bytes, what);
    }

    // Everything still works, on every port and protocol.
    assert!(demo.proc(pid).is_running(), "{}", demo.log.text());
    for target in [demo.http(), demo.https(&[b"http/1.1"])] {
        client
            .get(&target, "/pid")
            .expect("HTTP/1.1")
            .assert_ok_from(pid);
        let h2 = client.run(H2::open(&target)).expect("HTTP/2");
        let reply = client.run(h2.get("/pid")).expect("HTTP/2 request");
        reply.assert_ok_from(pid);
        assert_eq!(reply.version, Version::HTTP_2);
    }
    let health = client.get(&demo.admin(), "/healthz").expect("healthz");
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, "ok\n");

    demo.stop(pid);
}
