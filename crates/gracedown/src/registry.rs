//! The set of live connections, so that a drain can reach each one.
//!
//! Counting needs no registry (atomics do that), but closing idle connections when the drain
//! starts and force-closing the rest at the stop deadline does: the drain must find every live
//! connection to abort its task and wake whatever is parked on its I/O. The set is touched twice
//! per connection (insert when tracked, remove when the guard drops) and never on the I/O path.
//! It is split into shards, each behind its own short-held mutex, chosen round-robin by
//! connection number, so that accepting and closing on many worker threads at once rarely meet
//! on the same lock. A scan (once per drain phase) takes the shards one at a time.
//!
//! The registry is generic over what it holds (the drain stores each connection's shared
//! state, an `Arc`), so it depends on nothing else in the crate: the per-connection code sits
//! above it and never the other way round.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Enough shards that a few dozen worker threads seldom collide; a power of two so that the
/// shard of a connection is a mask of its number.
const SHARDS: usize = 32;

/// Where one connection lives in the registry, kept by its guard for the removal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    shard: usize,
    index: usize,
}

#[derive(Debug)]
struct Shard<T> {
    /// A slab: `None` entries are free and listed in `free`, so memory stays at the peak number
    /// of simultaneous connections instead of growing with every connection ever accepted.
    entries: Vec<Option<T>>,
    free: Vec<usize>,
}

// Not derived: the derive would ask for `T: Default`, which an empty shard does not need.
impl<T> Default for Shard<T> {
    fn default() -> Self {
        Shard {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Registry<T> {
    shards: Box<[Mutex<Shard<T>>]>,
}

/// Our critical sections only push, pop and swap `Option`s; a panic inside one is impossible in
/// practice, and if another thread panicked while holding the lock the slab is still
/// consistent, so poisoning is ignored rather than turned into a second panic.
fn lock<T>(shard: &Mutex<Shard<T>>) -> MutexGuard<'_, Shard<T>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Registry<T> {
    pub(crate) fn new() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    pub(crate) fn insert(&self, number: u64, conn: T) -> Slot {
        // Truncating to usize is fine: only the low bits pick the shard.
        let shard = (number as usize) & (SHARDS - 1);
        let mut guard = lock(&self.shards[shard]);
        let index = match guard.free.pop() {
            Some(index) => {
                guard.entries[index] = Some(conn);
                index
            }
            None => {
                guard.entries.push(Some(conn));
                guard.entries.len() - 1
            }
        };
        Slot { shard, index }
    }

    pub(crate) fn remove(&self, slot: Slot) {
        let removed = {
            let mut guard = lock(&self.shards[slot.shard]);
            let removed = guard.entries.get_mut(slot.index).and_then(Option::take);
            if removed.is_some() {
                guard.free.push(slot.index);
            }
            removed
        };
        // The entry is dropped after the lock is released: dropping the last `Arc` of a
        // connection frees its stored wakers, and a waker's drop is foreign code that has no
        // business under our lock.
        drop(removed);
    }

    /// Every connection live at the time each shard is visited. The caller acts on the copies
    /// after the locks are released: aborting and waking a task can make it end at once on
    /// another worker, and its guard then takes the shard lock to remove itself, so holding
    /// that lock while closing would only make connections wait for each other.
    pub(crate) fn snapshot(&self) -> Vec<T>
    where
        T: Clone,
    {
        let mut all = Vec::new();
        for shard in &self.shards {
            let guard = lock(shard);
            all.extend(guard.entries.iter().flatten().cloned());
        }
        all
    }
}
