//! Descriptor hygiene of the parent across many upgrades. This file holds a single test so
//! that no other test of the same process opens or closes descriptors while it counts them.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use grace_tests::{Reaper, exchange, fd_count, is_reaped};
use gracenet::{Error, Net};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

const NETCHILD: &str = env!("CARGO_BIN_EXE_netchild");
const CYCLES: usize = 50;

fn upgrading_net() -> Net {
    Net::builder()
        .inherit(false)
        .executable(NETCHILD)
        .args([
            NETCHILD,
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            "udp://127.0.0.1:0",
            "--max-seconds",
            "30",
        ])
        .ready_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap()
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
        let reaper = Reaper(child.pid());
        let pid = child.wait_ready(Some(Duration::from_secs(10))).unwrap();
        if i % 10 == 0 {
            let answer = exchange(
                TcpStream::connect(tcp.local_addr().unwrap()).unwrap(),
                "x\n",
            )
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
    let broken = Net::builder()
        .inherit(false)
        .executable(NETCHILD)
        .args([NETCHILD, "--mode", "exit1"])
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
