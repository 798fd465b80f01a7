//! Upgrades: one that happens hands over and drains; one that does not (a new binary that fails
//! to start, a stop while it starts) keeps this process serving, and a second request while
//! one is in progress is refused.
//!
//! The "new binary" is a shell script: `Net::builder().executable(...)` points the upgrade at
//! it. The tests start processes; they take turns (see `SPAWNING`).

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gracehttp::gracenet::Net;
use gracehttp::{Event, Outcome, Server};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use util::{Client, Gate, LOCAL, Running};

/// Held while a test writes its script and may start processes: a script being written in one
/// test while another forks could be inherited open for writing, and fail with ETXTBSY.
static SPAWNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An executable script with `body` after the shebang.
fn script(body: &str) -> PathBuf {
    let path = util::temp_path("new-binary.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A runner whose upgrades start `exe`, with a web and an admin server.
async fn start(exe: &PathBuf) -> Running {
    let net = Net::builder()
        .inherit(false)
        .executable(exe)
        .args([exe])
        .ready_timeout(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let net = Arc::new(net);
    let gate = Gate::new();
    let grace = util::grace(&net).server(Server::tcp("web", LOCAL, util::routes("web", &gate)));
    let admin = gracehttp::admin(grace.handle());
    util::start(grace.server(Server::tcp("admin", LOCAL, admin)), &net).await
}

/// Kills and reaps a committed new process (the test's child) when dropped, on every path.
struct Reaper(u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0 as i32);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

async fn upgrades(srv: &Running, result: &str) -> u64 {
    let res = Client::connect(srv.tcp("admin"))
        .await
        .get("/metrics")
        .await;
    let series = format!("gracehttp_upgrades_total{{result=\"{result}\"}}");
    util::metric(&res.text(), &series).unwrap_or_else(|| panic!("no {series}:\n{}", res.text()))
}

#[tokio::test]
async fn a_new_binary_that_reports_ready_takes_over_and_this_process_drains() {
    let _turn = SPAWNING.lock().await;
    let exe = script("printf 'READY=1\\n' >&\"$GRACENET_READY_FD\"\nexec sleep 30");
    let mut srv = start(&exe).await;
    let mut idle = Client::connect(srv.tcp("web")).await;
    assert_eq!(idle.get("/").await.status, 200);

    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeStarted);
    let new_pid = match srv.event().await {
        Event::UpgradeDone { pid } => pid,
        other => panic!("expected UpgradeDone, got {other:?}"),
    };
    let _reaper = Reaper(new_pid);
    // The upgrade thread started the drain at the commit, before the runner heard of it.
    assert!(srv.handle.is_draining());
    assert_eq!(srv.event().await, Event::Draining);
    // The keep-alive connection left idle is closed cleanly, and counted.
    idle.assert_clean_eof().await;
    match srv.outcome().await {
        Outcome::HandedOver { pid, drained } => {
            assert_eq!(pid, new_pid);
            assert_eq!(
                (drained.finished, drained.forced, drained.stuck),
                (1, 0, 0),
                "{drained:?}"
            );
        }
        other => panic!("expected HandedOver, got {other:?}"),
    }
    std::fs::remove_file(&exe).unwrap();
}

#[tokio::test]
async fn a_new_binary_that_exits_leaves_this_process_serving() {
    let _turn = SPAWNING.lock().await;
    let exe = script("exit 1");
    let mut srv = start(&exe).await;
    let mut client = Client::connect(srv.tcp("web")).await;
    assert_eq!(client.get("/").await.status, 200);

    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeStarted);
    match srv.event().await {
        Event::UpgradeFailed { reason } => {
            assert!(reason.contains("exited with status 1"), "{reason}")
        }
        other => panic!("expected UpgradeFailed, got {other:?}"),
    }

    // Still serving: on the connection opened before, on a new one, and not draining.
    assert_eq!(client.get("/").await.status, 200);
    assert_eq!(
        Client::connect(srv.tcp("web")).await.get("/").await.status,
        200
    );
    assert!(!srv.handle.is_draining());
    assert_eq!(upgrades(&srv, "failed").await, 1);
    assert_eq!(upgrades(&srv, "done").await, 0);

    srv.handle.stop();
    let drained = srv.stopped().await;
    assert_eq!(drained.forced, 0, "{drained:?}");
    std::fs::remove_file(&exe).unwrap();
}

#[tokio::test]
async fn an_upgrade_while_one_is_in_progress_is_refused() {
    let _turn = SPAWNING.lock().await;
    // Never ready: the ready timeout (1 s) ends it.
    let exe = script("exec sleep 30");
    let mut srv = start(&exe).await;

    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeStarted);
    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeRefused);
    // Serving while the new process does not come up.
    assert_eq!(
        Client::connect(srv.tcp("web")).await.get("/").await.status,
        200
    );
    match srv.event().await {
        Event::UpgradeFailed { reason } => {
            assert!(reason.contains("did not report ready"), "{reason}")
        }
        other => panic!("expected UpgradeFailed, got {other:?}"),
    }
    // The refused request was not an attempt: one failure only.
    assert_eq!(upgrades(&srv, "failed").await, 1);
    assert_eq!(
        Client::connect(srv.tcp("web")).await.get("/").await.status,
        200
    );

    srv.handle.stop();
    let drained = srv.stopped().await;
    assert_eq!(drained.forced, 0, "{drained:?}");
    std::fs::remove_file(&exe).unwrap();
}

/// A stop while an upgrade is starting cancels it: the new process, not yet ready, is killed,
/// and this process stops without waiting for the ready timeout and hands nothing over.
#[tokio::test]
async fn a_stop_during_an_upgrade_cancels_it() {
    let _turn = SPAWNING.lock().await;
    let pid_file = util::temp_path("starting.pid");
    let exe = script(&format!(
        "echo $$ > '{}'\nexec sleep 30",
        pid_file.display()
    ));
    let net = Arc::new(
        Net::builder()
            .inherit(false)
            .executable(&exe)
            .args([&exe])
            .ready_timeout(Some(Duration::from_secs(30)))
            .build()
            .unwrap(),
    );
    let gate = Gate::new();
    let grace = util::grace(&net).server(Server::tcp("web", LOCAL, util::routes("web", &gate)));
    let mut srv = util::start(grace, &net).await;

    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeStarted);
    // The new process is running (it wrote its pid) and not ready.
    let child: u32 = tokio::time::timeout(util::WAIT, async {
        loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the new process started");

    let stopped_at = std::time::Instant::now();
    srv.handle.stop();
    match srv.event().await {
        Event::UpgradeFailed { reason } => assert!(reason.contains("cancelled"), "{reason}"),
        other => panic!("expected the upgrade to be cancelled, got {other:?}"),
    }
    let drained = srv.stopped().await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "the stop waited for the ready timeout"
    );
    assert_eq!(drained.forced, 0, "{drained:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{child}")).exists(),
        "the cancelled new process {child} still exists"
    );
    assert!(
        net.superseded().is_none(),
        "a cancelled upgrade handed over"
    );
    std::fs::remove_file(&exe).unwrap();
    let _ = std::fs::remove_file(&pid_file);
}
