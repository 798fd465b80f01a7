//! Ctrl-C (and SIGTERM, SIGHUP) as a flag that every wait of the harness checks, so that the
//! harness unwinds through its cleanup instead of dying with servers left running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Catches SIGINT, SIGTERM and SIGHUP and sets the flag. tokio installs the handlers (safe
/// code, no `unsafe` here), on a current-thread runtime of its own thread; the handlers are
/// set before this returns. Programs the harness starts get the default actions back at
/// `exec`. (Blocking the signals and waiting for them with `sigwait` would leave them blocked
/// in every child too: the mask is inherited across `exec`.)
pub(crate) fn install() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime for Ctrl-C")?;
    let kinds = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ];
    let [int, term, hup] = {
        let _entered = rt.enter();
        kinds.map(signal)
    }
    .map(|s| s.context("catching SIGINT, SIGTERM and SIGHUP"));
    let (mut int, mut term, mut hup) = (int?, term?, hup?);
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            });
            // One signal is enough: from then on every wait gives up.
            INTERRUPTED.store(true, Ordering::SeqCst);
        })
        .context("starting the thread that waits for Ctrl-C")?;
    Ok(())
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error when Ctrl-C was pressed, so that `?` unwinds to the cleanup.
pub(crate) fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d` (the pause a scenario makes between its steps), looking at the flag every few ms
/// and returning early with an error on Ctrl-C.
pub(crate) fn sleep(d: Duration) -> Result<()> {
    testkit::wait_until(d, || interrupted().then_some(()));
    check()
}

/// Sleeps until `at` (not at all if it has passed), returning early on Ctrl-C.
pub(crate) fn sleep_until(at: Instant) -> Result<()> {
    sleep(at.saturating_duration_since(Instant::now()))
}
