//! End-to-end tests of failed `gracedemo` upgrades: a new binary that exits at once or never
//! reports ready leaves the old process serving every request; the next good binary takes over.

#[allow(
    dead_code,
    reason = "shared with other test targets, which use other parts"
)]
mod util;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::blocking::Client;
use testkit::fs::{point_link, read_pid};
use testkit::http::trickle;
use testkit::metrics;
use testkit::procfs::{group_members, process_exists};
use testkit::{TIMEOUT, wait_until};

use util::demo::{Demo, GRACEDEMO};

#[test]
fn broken_new_binaries_leave_the_old_process_serving() {
    let mut link = None;
    let mut demo = Demo::start_with(
        "broken",
        |dir| {
            // Deploys replace what this path points to; every upgrade executes the path again.
            let path = dir.join("gracedemo");
            point_link(&path, Path::new(GRACEDEMO)).expect("the link");
            link = Some(path.clone());
            path
        },
        &["--ready-timeout", "1s"],
    );
    let link = link.expect("the link was made");
    let exits = demo.dir.script("exits.sh", "#!/bin/sh\nexit 3\n").unwrap();
    let hang_pid = demo.dir.join("hangs.pid");
    let hangs = demo
        .dir
        .script(
            "hangs.sh",
            &format!(
                "#!/bin/sh\necho $$ > '{}.tmp'\nmv '{0}.tmp' '{0}'\nexec sleep 60\n",
                hang_pid.display()
            ),
        )
        .unwrap();
    let client = Client::new();
    let old = demo.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let requests = client.spawn(trickle(
        demo.http(),
        "/pid",
        Duration::from_millis(20),
        Arc::clone(&stop),
    ));
    let tls_requests = client.spawn(trickle(
        demo.https(&[b"h2", b"http/1.1"]),
        "/",
        Duration::from_millis(20),
        Arc::clone(&stop),
    ));

    // A new version that exits at once.
    point_link(&link, &exits).unwrap();
    demo.signal(Signal::SIGUSR2);
    demo.log
        .wait_for(&format!("upgrade failed; still serving pid={old}"));
    demo.log
        .wait_for("exited with status 3 before it was ready");

    // A new version that never reports ready; a second upgrade request while it starts.
    point_link(&link, &hangs).unwrap();
    demo.signal(Signal::SIGUSR2);
    let hanging: u32 = wait_until(TIMEOUT, || read_pid(&hang_pid))
        .unwrap_or_else(|| panic!("the hanging version never ran:\n{}", demo.log.text()));
    demo.signal(Signal::SIGUSR2);
    demo.log.wait_for(&format!(
        "upgrade requested while one is in progress; refused pid={old}"
    ));
    demo.log
        .wait_for_count(&format!("upgrade failed; still serving pid={old}"), 2);
    demo.log.wait_for(&format!(
        "new process {hanging} did not report ready within 1s; it was killed"
    ));
    assert!(
        !process_exists(hanging),
        "the new version that never got ready (pid {hanging}) is still there"
    );

    stop.store(true, Ordering::SeqCst);
    for (port, outcomes) in [("http", requests.wait()), ("https", tls_requests.wait())] {
        let wrong: Vec<_> = outcomes.iter().filter(|o| **o != Ok(old)).collect();
        assert!(
            outcomes.len() >= 10 && wrong.is_empty(),
            "{port}: of {} requests during the failed upgrades, these were not answered \
             by {old}: {wrong:?}",
            outcomes.len()
        );
    }
    let metrics = client.get(&demo.admin(), "/metrics").expect("metrics").body;
    assert_eq!(
        metrics::count(&metrics, "gracehttp_upgrades_total{result=\"failed\"}"),
        Some(2),
        "{metrics}"
    );
    assert_eq!(metrics::count(&metrics, "gracehttp_generation"), Some(0));

    // The real binary again: a clean handover.
    point_link(&link, Path::new(GRACEDEMO)).unwrap();
    let new = demo.upgrade();
    client
        .get(&demo.http(), "/pid")
        .expect("pid")
        .assert_ok_from(new);
    assert_eq!(demo.exit_code(old), 0);
    let members = group_members(demo.group());
    assert_eq!(
        members.iter().map(|m| m.pid).collect::<Vec<_>>(),
        [new],
        "processes of the group besides the new generation: {members:?}"
    );
    demo.signal(Signal::SIGTERM);
    assert_eq!(demo.exit_code(new), 0);
    assert!(group_members(demo.group()).is_empty());
    let log = demo.log.text();
    assert_eq!(log.matches("upgrade done").count(), 1, "{log}");
    demo.assert_no_panic();
}
