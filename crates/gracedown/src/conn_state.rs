//! The per-connection state: what the drain can reach of one connection.
//!
//! A connection has two parts, and they sit on either side of the [`Drain`](crate::Drain). This
//! part (the flags, the attached task, the wakers parked on the I/O) is shared by the
//! [`Tracked`](crate::Tracked), its [`ConnHandle`](crate::ConnHandle)s and the drain's registry,
//! and the drain closes connections through it without knowing their I/O type. The other part,
//! `Tracked<IO>` with its guard (`conn.rs`), holds the socket and a `Drain`, and does the
//! counting when the connection opens and ends. This part depends only on the drain-wide phase
//! and counters (`state.rs`), and the drain depends on it, so that the modules import one way.
//!
//! # The flags
//!
//! One `AtomicU8` of flags per connection. The I/O path does one load of it per poll. Every
//! transition is a single atomic read-modify-write, so the counters derived from the flags
//! (idle, finished, forced) are each adjusted exactly once per transition even when a drain,
//! the connection's own task and a handle in another task race.

use std::io;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::task::AbortHandle;

use crate::state::{DRAINING, State};

/// The protocol said nothing is in progress: closing now loses no work.
const IDLE: u8 = 1 << 0;
/// The drain closed this connection (idle at drain time, or force-closed).
const CLOSING: u8 = 1 << 1;
/// The close was a force-close (stop deadline passed).
const FORCED: u8 = 1 << 2;
/// The guard was dropped and the connection counted as ended.
const DONE: u8 = 1 << 3;
/// A task was attached with [`Tracked::spawn`](crate::Tracked::spawn); a close aborts it.
const TASK: u8 = 1 << 4;

const READ: usize = 0;
const WRITE: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Drain started (or the connection went idle during a drain): close it if it is idle.
    Idle,
    /// Stop deadline passed: close it whatever it is doing.
    Force,
}

/// What the drain can reach of one connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    flags: AtomicU8,
    /// The task serving the connection, when started with `Tracked::spawn`. Set at most once.
    task: OnceLock<AbortHandle>,
    /// Wakers of reads and writes that returned `Pending` outside the attached task (or with no
    /// attached task), woken on close. Only a poll that is about to sleep anyway touches this
    /// mutex, and only the drain ever competes for it, once per phase.
    wakers: Mutex<[Option<Waker>; 2]>,
}

fn lock_wakers(wakers: &Mutex<[Option<Waker>; 2]>) -> MutexGuard<'_, [Option<Waker>; 2]> {
    // Nothing inside the critical sections can panic, and `Option<Waker>`s are consistent
    // whatever happened, so a poisoned lock is used as is.
    wakers.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConnState {
    pub(crate) fn new() -> Self {
        ConnState {
            flags: AtomicU8::new(0),
            task: OnceLock::new(),
            wakers: Mutex::new([None, None]),
        }
    }

    fn flags(&self) -> u8 {
        self.flags.load(Acquire)
    }

    /// Whether the connection is marked idle.
    pub(crate) fn is_idle(&self) -> bool {
        self.flags() & IDLE != 0
    }

    /// Whether the drain closed the connection (idle at drain time, or force-closed).
    pub(crate) fn is_closing(&self) -> bool {
        self.flags() & CLOSING != 0
    }

    /// Whether the close was a force-close.
    pub(crate) fn is_forced(&self) -> bool {
        self.flags() & FORCED != 0
    }

    /// Whether the connection ended (its guard was dropped).
    pub(crate) fn is_ended(&self) -> bool {
        self.flags() & DONE != 0
    }

    /// Closes the connection for `reason`; idempotent, safe from any thread.
    pub(crate) fn close(&self, reason: Close) {
        match reason {
            Close::Force => {
                let prev = self.flags.fetch_or(CLOSING | FORCED, SeqCst);
                if prev & (FORCED | DONE) != 0 {
                    return;
                }
            }
            Close::Idle => {
                // Only an idle connection is closed, and the check and the close are one step:
                // a connection that turned busy an instant ago is left alone (its `mark_busy`
                // won), one that is closing can no longer turn busy (`mark_busy` returns false).
                let closed = self.flags.fetch_update(SeqCst, SeqCst, |f| {
                    (f & IDLE != 0 && f & (CLOSING | DONE) == 0).then_some(f | CLOSING)
                });
                if closed.is_err() {
                    return;
                }
            }
        }
        if let Some(task) = self.task.get() {
            task.abort();
        }
        let parked = std::mem::take(&mut *lock_wakers(&self.wakers));
        // Woken outside the lock: `wake` may run the woken task's scheduler code.
        for waker in parked.into_iter().flatten() {
            waker.wake();
        }
    }

    pub(crate) fn attach(&self, task: AbortHandle) {
        if self.task.set(task).is_err() {
            // `Tracked::spawn` consumes the `Tracked`, so a second attach cannot happen.
            return;
        }
        // Pairs with `close`, which sets CLOSING and then looks for a task: both are SeqCst
        // read-modify-writes of `flags`, so either `close` sees the task or we see CLOSING.
        let prev = self.flags.fetch_or(TASK, SeqCst);
        if prev & CLOSING != 0 {
            if let Some(task) = self.task.get() {
                task.abort();
            }
        }
    }

    /// Whether a poll that returned `Pending` must leave its waker for the drain. Not when it
    /// runs inside the attached task, which a close aborts anyway; that keeps the common case
    /// (every connection started with `Tracked::spawn`) free of the waker mutex.
    fn must_park(&self, flags: u8) -> bool {
        if flags & TASK == 0 {
            return true;
        }
        match (self.task.get(), tokio::task::try_id()) {
            (Some(task), Some(current)) => task.id() != current,
            _ => true,
        }
    }

    /// Leaves `waker` for the drain; returns the flags as they are once it is stored, so the
    /// caller can notice a close that happened meanwhile (the close took the wakers before ours
    /// was stored and will not wake it).
    fn park(&self, direction: usize, waker: &Waker) -> u8 {
        {
            let mut wakers = lock_wakers(&self.wakers);
            match &mut wakers[direction] {
                Some(old) if old.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
        self.flags()
    }

    /// Runs one I/O poll of the connection: refused once the drain closed it, and, when it
    /// would sleep outside the attached task, with its waker left for the drain (and refused
    /// after all if the close happened meanwhile). `closed` says what a closed connection
    /// answers in this direction.
    fn guarded<T>(
        &self,
        direction: usize,
        cx: &mut Context<'_>,
        closed: fn(u8) -> io::Result<T>,
        io: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let flags = self.flags();
        if flags & CLOSING != 0 {
            return Poll::Ready(closed(flags));
        }
        let poll = io(cx);
        if poll.is_pending() && self.must_park(flags) {
            let flags = self.park(direction, cx.waker());
            if flags & CLOSING != 0 {
                return Poll::Ready(closed(flags));
            }
        }
        poll
    }

    /// A read through [`guarded`](ConnState::guarded): after the drain closed the connection,
    /// EOF (idle close) or `ConnectionAborted` (force-close).
    pub(crate) fn guarded_read(
        &self,
        cx: &mut Context<'_>,
        io: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        self.guarded(READ, cx, read_closed, io)
    }

    /// A write or flush through [`guarded`](ConnState::guarded): after the drain closed the
    /// connection, `ConnectionAborted`.
    pub(crate) fn guarded_write<T>(
        &self,
        cx: &mut Context<'_>,
        io: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        self.guarded(WRITE, cx, write_closed, io)
    }

    pub(crate) fn mark_idle(&self, state: &State) {
        // Count first and set the bit second (and the other way round when leaving idle), so
        // `idle` is never below the number of idle connections: a reader may see one too many
        // for an instant, never a wrapped-around `usize::MAX`.
        state.idle.fetch_add(1, SeqCst);
        let set = self.flags.fetch_update(SeqCst, Relaxed, |f| {
            (f & (IDLE | DONE) == 0).then_some(f | IDLE)
        });
        if set.is_err() {
            state.idle.fetch_sub(1, SeqCst);
            return;
        }
        // Pairs with `Drain::drain`, which publishes the phase and then closes the idle
        // connections it finds. Both sides are SeqCst, so at least one sees the other: a
        // connection that goes idle during a drain is closed at once, never left open.
        if state.phase.load(SeqCst) >= DRAINING {
            self.close(Close::Idle);
        }
    }

    pub(crate) fn mark_busy(&self, state: &State) -> bool {
        let cleared = self.flags.fetch_update(SeqCst, Relaxed, |f| {
            (f & IDLE != 0 && f & CLOSING == 0).then_some(f & !IDLE)
        });
        match cleared {
            Ok(_) => {
                state.idle.fetch_sub(1, SeqCst);
                true
            }
            Err(f) => f & CLOSING == 0,
        }
    }

    /// Marks the connection done and counts it in `finished` or `forced` (not yet out of
    /// `active`: the guard does that last). Called once, by the guard's `Drop`.
    pub(crate) fn end(&self, state: &State) {
        // One step: mark the connection done and leave idle, so a `ConnHandle::mark_idle` or
        // `mark_busy` racing with the drop cannot count it a second time.
        let prev = self
            .flags
            .fetch_update(SeqCst, SeqCst, |f| Some((f | DONE) & !IDLE))
            .unwrap_or_else(|f| f);
        if prev & IDLE != 0 {
            state.idle.fetch_sub(1, SeqCst);
        }
        if prev & FORCED != 0 {
            state.forced.fetch_add(1, SeqCst);
        } else {
            state.finished.fetch_add(1, SeqCst);
        }
    }
}

fn closed_error(flags: u8) -> io::Error {
    let why = if flags & FORCED != 0 {
        "connection force-closed by the drain"
    } else {
        "idle connection closed by the drain"
    };
    io::Error::new(io::ErrorKind::ConnectionAborted, why)
}

/// Writes to a closed connection fail, idle or forced.
fn write_closed<T>(flags: u8) -> io::Result<T> {
    Err(closed_error(flags))
}

/// An idle connection reads as closed by the peer, which every protocol handles already; a
/// force-closed one reads as an error, so nobody mistakes it for a clean end.
fn read_closed(flags: u8) -> io::Result<()> {
    if flags & FORCED != 0 {
        Err(closed_error(flags))
    } else {
        Ok(())
    }
}
