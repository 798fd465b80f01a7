//! The server's process group: every generation shares the first one's group, so the harness
//! can find them all, reap them (as their subreaper), count those alive, spot zombies, and kill
//! whatever is left.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use super::interrupt::interrupted;
use super::process::{self, Exit, reap_group};
use super::procfs::{ProcStat, exe, processes};

/// What the watcher saw of the server's process group.
#[derive(Debug, Default)]
struct Seen {
    /// Every server process (running the server binary) ever seen, with when first seen.
    servers: BTreeMap<u32, Instant>,
    /// (when, live server processes) at every change.
    live: Vec<(Instant, usize)>,
    /// Exits reaped by the harness: pid, status, when.
    exits: Vec<(u32, Exit, Instant)>,
    /// Zombie children of a live server, with when first seen.
    zombies_first_seen: BTreeMap<u32, Instant>,
    /// Zombies left unreaped by their server parent for longer than [`ZOMBIE_GRACE`].
    zombies: BTreeSet<u32>,
    /// Members of the group right now (any state).
    members: Vec<ProcStat>,
}

/// How long a parent may take to reap its exited child before it counts as a zombie.
const ZOMBIE_GRACE: Duration = Duration::from_secs(1);
/// How often the watcher scans /proc.
const SCAN_EVERY: Duration = Duration::from_millis(20);

/// The process group of one server run (every generation shares the group of the first), with
/// a thread that scans it, reaps what exits, and counts live generations and zombies.
#[derive(Debug)]
pub(crate) struct ServerGroup {
    pub(crate) pgid: u32,
    binary: PathBuf,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    /// The harness has SIGKILLed the group (so a SIGKILL exit is ours, reported otherwise).
    killed: AtomicBool,
}

impl ServerGroup {
    /// Starts `command` in a new process group, stderr to `log`. `binary` is the server's
    /// executable: processes of the group that run it are generations.
    pub(crate) fn spawn(mut command: Command, binary: &Path, log: &Path) -> Result<ServerGroup> {
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let binary = binary
            .canonicalize()
            .with_context(|| format!("resolving {}", binary.display()))?;
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        // The child is reaped by the watcher (waitpid on the group), like the generations
        // after it; the `Child` handle is not needed.
        let pgid = child.id();
        drop(child);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (seen, stop, binary) = (Arc::clone(&seen), Arc::clone(&stop), binary.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    scan(pgid, &binary, &seen);
                    std::thread::sleep(SCAN_EVERY);
                }
            })
        };
        Ok(ServerGroup {
            pgid,
            binary,
            seen,
            stop,
            watcher: Some(watcher),
            killed: AtomicBool::new(false),
        })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Scans now (rather than waiting for the watcher's next round).
    pub(crate) fn rescan(&self) {
        scan(self.pgid, &self.binary, &self.seen);
    }

    /// The most server processes alive at once between `from` and now.
    pub(crate) fn max_live_since(&self, from: Instant) -> usize {
        let seen = self.seen();
        let before = seen
            .live
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .map_or(0, |&(_, n)| n);
        seen.live
            .iter()
            .filter(|(t, _)| *t > from)
            .map(|&(_, n)| n)
            .chain([before])
            .max()
            .unwrap_or(0)
    }

    /// The most server processes alive at once over the whole run.
    pub(crate) fn max_live(&self) -> usize {
        self.seen().live.iter().map(|&(_, n)| n).max().unwrap_or(0)
    }

    /// Server processes first seen after `from`.
    pub(crate) fn servers_since(&self, from: Instant) -> Vec<u32> {
        self.seen()
            .servers
            .iter()
            .filter(|&(_, t)| *t >= from)
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Zombies left unreaped by a server parent, so far.
    pub(crate) fn zombies(&self) -> Vec<u32> {
        self.seen().zombies.iter().copied().collect()
    }

    /// Exits reaped so far: pid, status, when.
    pub(crate) fn exits(&self) -> Vec<(u32, Exit, Instant)> {
        self.seen().exits.clone()
    }

    /// Members of the group now, any state, as of the last scan.
    pub(crate) fn members(&self) -> Vec<ProcStat> {
        self.seen().members.clone()
    }

    /// Whether the harness had to SIGKILL the group.
    pub(crate) fn killed_by_harness(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Waits until the group is empty (everything exited and reaped), at most `limit`.
    pub(crate) fn wait_empty(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            self.rescan();
            if self.members().is_empty() {
                return true;
            }
            if Instant::now() >= end || interrupted() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs whatever is left of the group and reaps it; returns the pids that were left.
    pub(crate) fn kill_all(&self) -> Vec<u32> {
        self.rescan();
        let left: Vec<u32> = self
            .members()
            .iter()
            .filter(|p| !p.is_zombie())
            .map(|p| p.pid)
            .collect();
        if !left.is_empty() {
            self.killed.store(true, Ordering::SeqCst);
        }
        // An error is a group already gone.
        let _ = process::signal_group(self.pgid, Signal::SIGKILL);
        // Bounded by the limit; SIGKILL cannot be ignored.
        let _ = self.wait_empty(Duration::from_secs(5));
        left
    }
}

impl Drop for ServerGroup {
    fn drop(&mut self) {
        // Whatever happened (an error, a panic, Ctrl-C), nothing of ours stays running.
        let _ = self.kill_all();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

fn scan(pgid: u32, binary: &Path, seen: &Mutex<Seen>) {
    let now = Instant::now();
    let reaped = reap_group(pgid);
    let all = processes();
    let members: Vec<ProcStat> = all.iter().filter(|p| p.pgrp == pgid).cloned().collect();
    let servers: Vec<u32> = members
        .iter()
        .filter(|p| !p.is_zombie() && exe(p.pid).is_some_and(|e| e == binary))
        .map(|p| p.pid)
        .collect();
    // Zombies whose parent is a live server: the server should reap its own children.
    let zombies: Vec<u32> = all
        .iter()
        .filter(|p| p.is_zombie() && servers.contains(&p.ppid))
        .map(|p| p.pid)
        .collect();
    let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
    for (pid, status) in reaped {
        s.exits.push((pid, status, now));
    }
    for &pid in &servers {
        s.servers.entry(pid).or_insert(now);
    }
    if s.live.last().is_none_or(|&(_, n)| n != servers.len()) && s.live.len() < 1_000_000 {
        s.live.push((now, servers.len()));
    }
    s.zombies_first_seen.retain(|pid, _| zombies.contains(pid));
    for pid in zombies {
        let first = *s.zombies_first_seen.entry(pid).or_insert(now);
        if now.duration_since(first) >= ZOMBIE_GRACE {
            s.zombies.insert(pid);
        }
    }
    s.members = members;
}
