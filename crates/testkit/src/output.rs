//! The output of a spawned process: a pipe read by a thread of its own until the last writer
//! closes it, so that a test can wait for a line without ever blocking on the pipe itself.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::wait::TIMEOUT;

/// Text a process writes to a pipe, collected by a thread until the last writer closes it.
/// Every generation of a server shares its first process's stdout and stderr, so this holds the
/// log of all of them. Cloning gives another handle on the same text.
#[derive(Clone, Debug, Default)]
pub struct Output(Arc<(Mutex<Captured>, Condvar)>);

#[derive(Debug, Default)]
struct Captured {
    text: String,
    closed: bool,
}

impl Output {
    /// Starts the thread that reads `pipe` to its end.
    pub(crate) fn capture(mut pipe: impl Read + Send + 'static) -> Output {
        let output = Output::default();
        let shared = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                // A read error ends the capture like the end of the pipe: there is no more to
                // read either way.
                let n = pipe.read(&mut buf).unwrap_or(0);
                let (lock, changed) = &*shared.0;
                let mut captured = lock.lock().unwrap_or_else(PoisonError::into_inner);
                if n == 0 {
                    captured.closed = true;
                    changed.notify_all();
                    return;
                }
                captured.text.push_str(&String::from_utf8_lossy(&buf[..n]));
                changed.notify_all();
            }
        });
        output
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        self.0
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .text
            .clone()
    }

    /// Waits (at most [`TIMEOUT`]) until `done` holds for the captured state; whether it did.
    fn wait(&self, mut done: impl FnMut(&Captured) -> bool) -> bool {
        let (lock, changed) = &*self.0;
        let deadline = Instant::now() + TIMEOUT;
        let mut captured = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !done(&captured) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            captured = changed
                .wait_timeout(captured, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Waits until `needle` has been written.
    ///
    /// # Panics
    ///
    /// With the whole output, if it is not written within [`TIMEOUT`].
    pub fn wait_for(&self, needle: &str) {
        assert!(
            self.wait(|c| c.text.contains(needle)),
            "{needle:?} not written within {TIMEOUT:?}; output:\n{}",
            self.text()
        );
    }

    /// Waits until `needle` has been written at least `count` times.
    ///
    /// # Panics
    ///
    /// With the whole output, if that does not happen within [`TIMEOUT`].
    pub fn wait_for_count(&self, needle: &str, count: usize) {
        assert!(
            self.wait(|c| c.text.matches(needle).count() >= count),
            "{needle:?} not written {count} times within {TIMEOUT:?}; output:\n{}",
            self.text()
        );
    }

    /// Waits until every writer has closed the pipe, and returns the whole output.
    ///
    /// # Panics
    ///
    /// With the output so far, if the pipe is still open after [`TIMEOUT`].
    pub fn complete(&self) -> String {
        assert!(
            self.wait(|c| c.closed),
            "output still open after {TIMEOUT:?}:\n{}",
            self.text()
        );
        self.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_until_the_writer_closes() {
        let output = Output::capture(&b"one\ntwo\none\n"[..]);
        output.wait_for("two");
        output.wait_for_count("one", 2);
        assert_eq!(output.complete(), "one\ntwo\none\n");
    }
}
