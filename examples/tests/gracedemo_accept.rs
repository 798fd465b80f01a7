//! Accept errors: when the process runs out of descriptors (EMFILE), `gracedemo` pauses its
//! accept loop with a log line instead of spinning or exiting, and serves again once
//! descriptors are free.

#[allow(
    dead_code,
    reason = "shared with other test targets, which use other parts"
)]
mod util;

use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::blocking::Client;
use testkit::procfs::{self, group_members};
use testkit::{TIMEOUT, wait_until};

use util::demo::{Demo, GRACEDEMO};

/// Clock ticks of CPU time (user + system) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    procfs::stat(pid).map_or(0, |s| s.cpu_ticks())
}

#[test]
fn out_of_descriptors_pauses_accepting_and_recovers() {
    // A wrapper that lowers the descriptor limit, then becomes gracedemo (same pid).
    let mut demo = Demo::start_with(
        "emfile",
        |dir| {
            dir.script(
                "low-fd-limit.sh",
                &format!("#!/bin/sh\nulimit -n 64 || exit 99\nexec '{GRACEDEMO}' \"$@\"\n"),
            )
            .expect("the wrapper script")
        },
        &[],
    );
    let pid = demo.pid();
    let client = Client::new();
    assert_eq!(client.get(&demo.http(), "/pid").unwrap().pid(), Some(pid));

    // More connections than descriptors are left: the kernel queues them in the backlog, and
    // the accept loop runs into EMFILE.
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(TcpStream::connect_timeout(&demo.http, TIMEOUT).expect("connect"));
    }
    demo.log
        .wait_for("accept failed; pausing before the next accept");
    let ticks_before = cpu_ticks(pid);
    let lines_before = demo.log.text().matches("accept failed").count();
    // An observation window, not synchronisation: a spinning loop would burn a core and log
    // thousands of lines in it; the backoff doubles up to one second.
    std::thread::sleep(Duration::from_millis(1500));
    let lines = demo.log.text().matches("accept failed").count() - lines_before;
    let ticks = cpu_ticks(pid) - ticks_before;
    eprintln!("over 1.5 s out of descriptors: {lines} log lines, {ticks} clock ticks of CPU");
    assert!(
        lines <= 30,
        "{lines} accept-failure lines in 1.5 s: the loop spins"
    );
    assert!(
        ticks < 50,
        "{ticks} clock ticks of CPU in 1.5 s: the loop spins"
    );
    assert!(demo.proc(pid).is_running(), "the server exited on EMFILE");

    // Descriptors free again: the server serves, new connections and the queued ones alike.
    drop(clients);
    let reply = wait_until(TIMEOUT, || client.get(&demo.http(), "/pid").ok());
    assert_eq!(reply.and_then(|r| r.pid()), Some(pid));

    demo.signal(Signal::SIGTERM);
    assert_eq!(demo.exit_code(pid), 0);
    assert!(group_members(demo.group()).is_empty());
    demo.assert_no_panic();
}
