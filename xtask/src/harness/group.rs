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
use testkit::procfs::{Stat, processes};
use testkit::wait_until;

use super::interrupt::interrupted;
use super::process::{self, Exit, reap_group};
use super::procfs::exe;

/// What the watcher saw of the server's process group.
#[derive(Debug, Default)]
struct Seen {
    /// Every server process (one that has exec'd the server binary) ever seen, with when first
    /// seen.
    servers: BTreeMap<u32, Instant>,
    /// (when, live server processes) at every change.
    live: Vec<(Instant, usize)>,
    /// Exits reaped by the harness: pid, status.
    exits: Vec<(u32, Exit)>,
    /// Zombie children of a live server, with when first seen.
    zombies_first_seen: BTreeMap<u32, Instant>,
    /// Zombies left unreaped by their server parent for longer than [`ZOMBIE_GRACE`].
    zombies: BTreeSet<u32>,
    /// Members of the group right now (any state).
    members: Vec<Stat>,
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
        max_since(&self.seen().live, from)
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

    /// Exits reaped so far: pid, status.
    pub(crate) fn exits(&self) -> Vec<(u32, Exit)> {
        self.seen().exits.clone()
    }

    /// Members of the group now, any state, as of the last scan.
    pub(crate) fn members(&self) -> Vec<Stat> {
        self.seen().members.clone()
    }

    /// Whether the harness had to SIGKILL the group.
    pub(crate) fn killed_by_harness(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Waits until the group is empty (everything exited and reaped), at most `limit`.
    /// Gives up early on Ctrl-C.
    pub(crate) fn wait_empty(&self, limit: Duration) -> bool {
        let empty = wait_until(limit, || {
            self.rescan();
            let empty = self.members().is_empty();
            (empty || interrupted()).then_some(empty)
        });
        empty == Some(true)
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

/// The most server processes alive at once from `from` on, by `live`'s changes (in time
/// order): the count in force at `from` (the last change before it), and every later one.
fn max_since(live: &[(Instant, usize)], from: Instant) -> usize {
    let since = live.partition_point(|(t, _)| *t <= from).saturating_sub(1);
    live[since..].iter().map(|&(_, n)| n).max().unwrap_or(0)
}

fn scan(pgid: u32, binary: &Path, seen: &Mutex<Seen>) {
    let now = Instant::now();
    let reaped = reap_group(pgid);
    // All processes, not only the group's (`group_members`): a server's zombie child counts
    // wherever it is.
    let all = processes();
    let members: Vec<Stat> = all.iter().filter(|p| p.pgrp == pgid).cloned().collect();
    // A server only once it has exec'd: gracenet's child shares its parent's memory from
    // `clone` to `execve` (CLONE_VM | CLONE_VFORK), so until then its /proc/PID/exe names the
    // parent's binary, whatever binary it is about to run. The stat (read above) comes before
    // the exe, so the exe read is of the image the exec put in place.
    let servers: Vec<u32> = members
        .iter()
        .filter(|p| !p.is_zombie() && p.has_execed() && exe(p.pid).is_some_and(|e| e == binary))
        .map(|p| p.pid)
        .collect();
    // Zombies whose parent is a live server: the server should reap its own children.
    let zombies: Vec<u32> = all
        .iter()
        .filter(|p| p.is_zombie() && servers.contains(&p.ppid))
        .map(|p| p.pid)
        .collect();
    let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
    s.exits.extend(reaped);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_alive_since_counts_what_was_in_force_then() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let live = [
            (at(0), 1),
            (at(10), 2),
            (at(20), 1),
            (at(30), 3),
            (at(40), 1),
        ];
        assert_eq!(max_since(&live, at(25)), 3);
        assert_eq!(max_since(&live, at(35)), 3, "3 were alive at 35 ms");
        assert_eq!(max_since(&live, at(45)), 1);
        assert_eq!(
            max_since(&live[2..], at(0)),
            3,
            "none before the first change"
        );
        assert_eq!(max_since(&[], t), 0);
    }
}
