//! Descriptor hygiene of the parent across many upgrades. This file holds a single test so
//! that no other test of the same process opens or closes descriptors while it counts them.

use std::time::Instant;

use grace_tests::upgrading_to;
use gracenet::{Error, Net};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use testkit::line::Session;
use testkit::process::is_reaped;
use testkit::{Proc, TIMEOUT};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");
const CYCLES: usize = 50;

fn upgrading_net() -> Net {
    let args = [
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--max-seconds",
        "30",
    ];
    upgrading_to(NETCHILD, args, TIMEOUT).build().unwrap()
}

/// The number of descriptors this process holds open.
fn fd_count() -> usize {
    testkit::procfs::fd_count(std::process::id()).expect("/proc/self/fd can be listed")
}

#[test]
fn fifty_spawn_and_reap_cycles_leave_the_descriptor_count_unchanged() {
    // What the library hands out is close-on-exec and nonblocking.
    {
        let net = upgrading_net();
        let tcp = net.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let fd_flags = FdFlag::from_bits_truncate(fcntl(&tcp, FcntlArg::F_GETFD).unwrap());
        let fl_flags = OFlag::from_bits_truncate(fcntl(&tcp, FcntlArg::F_GETFL).unwrap());
        assert!(fd_flags.contains(FdFlag::FD_CLOEXEC));
        assert!(fl_flags.contains(OFlag::O_NONBLOCK));
    }

    // Each cycle is a whole upgrade of a process: its `Net` and listeners, the new process,
    // its readiness, and then (as the old process would exit) everything dropped.
    let before = fd_count();
    let started = Instant::now();
    for i in 0..CYCLES {
        let net = upgrading_net();
        let tcp = net.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let _udp = net.listen_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let child = net.start_process().unwrap();
        let reaper = Proc::adopt(child.pid());
        let pid = child.wait_ready(Some(TIMEOUT)).unwrap();
        if i % 10 == 0 {
            let answer = Session::tcp(tcp.local_addr().unwrap())
                .and_then(|mut s| s.send("x"))
                .unwrap();
            assert!(answer.starts_with("pid "), "{answer}");
        }
        drop(reaper);
        assert!(is_reaped(pid));
    }
    let per_cycle = started.elapsed() / CYCLES as u32;
    let after = fd_count();
    eprintln!(
        "descriptors before {before}, after {CYCLES} cycles {after}; {per_cycle:?} per spawn-ready-reap cycle"
    );
    assert_eq!(before, after, "descriptors leaked across {CYCLES} upgrades");

    // Failed attempts leak nothing either.
    let broken = upgrading_to(NETCHILD, ["--mode", "exit1"], TIMEOUT)
        .build()
        .unwrap();
    let _l = broken.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let before = fd_count();
    for _ in 0..CYCLES {
        assert!(matches!(
            broken.upgrade(),
            Err(Error::ChildExited { code: 1, .. })
        ));
    }
    assert_eq!(
        before,
        fd_count(),
        "descriptors leaked across {CYCLES} failed upgrades"
    );
}
