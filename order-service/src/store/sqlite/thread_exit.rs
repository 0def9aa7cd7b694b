//! Waiting, within a bound, for one of the store's threads to finish when the store is dropped:
//! a graceful stop should leave queued writes committed and the WAL emptied, but a thread stuck
//! on a frozen disk must not hold the process forever.

use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Waits for its thread when dropped, up to a timeout.
pub(super) struct ThreadExit {
    name: &'static str,
    timeout: Duration,
    /// Disconnected when the thread drops its [`Exiting`]. (A `Mutex` only to make the store
    /// `Sync`; it is used once, in `drop`.)
    exited: Mutex<mpsc::Receiver<()>>,
}

/// Held by the thread until it ends (returns or unwinds).
pub(super) struct Exiting(#[allow(dead_code)] mpsc::Sender<()>);

impl ThreadExit {
    /// A pair for the thread `name`: it keeps the [`Exiting`], the owner the [`ThreadExit`].
    pub(super) fn new(name: &'static str, timeout: Duration) -> (Exiting, ThreadExit) {
        let (exiting, exited) = mpsc::channel();
        (
            Exiting(exiting),
            ThreadExit {
                name,
                timeout,
                exited: Mutex::new(exited),
            },
        )
    }
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        let exited = match self.exited.get_mut() {
            Ok(exited) => exited,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Ok(()) | Err(RecvTimeoutError::Timeout) = exited.recv_timeout(self.timeout) {
            tracing::warn!(
                thread = self.name,
                timeout = ?self.timeout,
                "thread did not stop in time; leaving it behind"
            );
        }
    }
}
