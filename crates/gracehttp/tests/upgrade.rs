//! Upgrades: one that happens hands over and drains; one that does not (a new binary that fails
//! to start, a stop while it starts) keeps this process serving, and a second request while
//! one is in progress is refused.
//!
//! The "new binary" is a shell script: `Net::builder().executable(...)` points the upgrade at
//! it. The tests start processes; they take turns (see `SPAWNING`).

mod util;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gracehttp::gracenet::Net;
use gracehttp::{Event, Outcome, Server};
use testkit::fs::read_pid;
use testkit::http::RawClient;
use testkit::procfs::process_exists;
use testkit::{LOCAL, Proc, TIMEOUT, TempDir, metrics, wait_until_async};
use util::{Gate, Running};

/// Held while a test writes its script and may start processes: a script being written in one
/// test while another forks could be inherited open for writing, and fail with ETXTBSY.
static SPAWNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An executable script in `dir` with `body` after the shebang.
fn script(dir: &TempDir, body: &str) -> PathBuf {
    dir.script("new-binary.sh", &format!("#!/bin/sh\n{body}\n"))
        .unwrap()
}

/// A runner whose upgrades start `exe`, with a web and an admin server.
async fn start(exe: &Path) -> Running {
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

async fn upgrades(srv: &Running, result: &str) -> u64 {
    let res = srv.get_once("admin", "/metrics").await;
    let series = format!("gracehttp_upgrades_total{{result=\"{result}\"}}");
    metrics::count(&res.text(), &series).unwrap_or_else(|| panic!("no {series}:\n{}", res.text()))
}

#[tokio::test]
async fn a_new_binary_that_reports_ready_takes_over_and_this_process_drains() {
    let _turn = SPAWNING.lock().await;
    let dir = TempDir::new("upgrade-done").unwrap();
    let exe = script(
        &dir,
        "printf 'READY=1\\n' >&\"$GRACENET_READY_FD\"\nexec sleep 30",
    );
    let mut srv = start(&exe).await;
    let mut idle = RawClient::connect(srv.tcp("web")).await.unwrap();
    assert_eq!(idle.get("/").await.unwrap().status, 200);

    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeStarted);
    let new_pid = match srv.event().await {
        Event::UpgradeDone { pid } => pid,
        other => panic!("expected UpgradeDone, got {other:?}"),
    };
    // Killed and reaped on every path: the committed new process is this test's child.
    let _new = Proc::adopt(new_pid);
    // The upgrade thread started the drain at the commit, before the runner heard of it.
    assert!(srv.handle.is_draining());
    assert_eq!(srv.event().await, Event::Draining);
    // The keep-alive connection left idle is closed cleanly, and counted.
    idle.assert_clean_eof().await;
    match srv.outcome().await {
        Outcome::HandedOver { pid, drained } => {
            assert_eq!(pid, new_pid);
            util::assert_drained(&drained, (1, 0, 0));
        }
        other => panic!("expected HandedOver, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_binary_that_exits_leaves_this_process_serving() {
    let _turn = SPAWNING.lock().await;
    let dir = TempDir::new("upgrade-exits").unwrap();
    let exe = script(&dir, "exit 1");
    let mut srv = start(&exe).await;
    let mut client = RawClient::connect(srv.tcp("web")).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);

    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeStarted);
    match srv.event().await {
        Event::UpgradeFailed { reason } => {
            assert!(reason.contains("exited with status 1"), "{reason}")
        }
        other => panic!("expected UpgradeFailed, got {other:?}"),
    }

    // Still serving: on the connection opened before, on a new one, and not draining.
    assert_eq!(client.get("/").await.unwrap().status, 200);
    assert_eq!(srv.get_once("web", "/").await.status, 200);
    assert!(!srv.handle.is_draining());
    assert_eq!(upgrades(&srv, "failed").await, 1);
    assert_eq!(upgrades(&srv, "done").await, 0);

    srv.handle.stop();
    let drained = srv.stopped().await;
    assert_eq!(drained.forced, 0, "{drained:?}");
}

#[tokio::test]
async fn an_upgrade_while_one_is_in_progress_is_refused() {
    let _turn = SPAWNING.lock().await;
    // Never ready: the ready timeout (1 s) ends it.
    let dir = TempDir::new("upgrade-hangs").unwrap();
    let exe = script(&dir, "exec sleep 30");
    let mut srv = start(&exe).await;

    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeStarted);
    srv.handle.upgrade();
    assert_eq!(srv.event().await, Event::UpgradeRefused);
    // Serving while the new process does not come up.
    assert_eq!(srv.get_once("web", "/").await.status, 200);
    match srv.event().await {
        Event::UpgradeFailed { reason } => {
            assert!(reason.contains("did not report ready"), "{reason}")
        }
        other => panic!("expected UpgradeFailed, got {other:?}"),
    }
    // The refused request was not an attempt: one failure only.
    assert_eq!(upgrades(&srv, "failed").await, 1);
    assert_eq!(srv.get_once("web", "/").await.status, 200);

    srv.handle.stop();
    let drained = srv.stopped().await;
    assert_eq!(drained.forced, 0, "{drained:?}");
}

/// A stop while an upgrade is starting cancels it: the new process, not yet ready, is killed,
/// and this process stops without waiting for the ready timeout and hands nothing over.
#[tokio::test]
async fn a_stop_during_an_upgrade_cancels_it() {
    let _turn = SPAWNING.lock().await;
    let dir = TempDir::new("upgrade-cancelled").unwrap();
    let pid_file = dir.join("starting.pid");
    let exe = script(
        &dir,
        &format!("echo $$ > '{}'\nexec sleep 30", pid_file.display()),
    );
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
    let child = wait_until_async(TIMEOUT, || read_pid(&pid_file))
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
        !process_exists(child),
        "the cancelled new process {child} still exists"
    );
    assert!(
        net.superseded().is_none(),
        "a cancelled upgrade handed over"
    );
}
