//! What the writer thread tells the health check about writes: how its last commit went, how
//! long it has been inside the current one, and whether the database files were lost. A read
//! cannot tell a full disk, a read-only remount or a frozen filesystem from a healthy one; the
//! writer's own outcomes can.

use super::files::FilesChanged;
use crate::domain::Error;
use crate::error_chain::DisplayChain;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A cause shared between the health check and every write it failed.
pub(super) type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Shared between the writer thread (which records) and the store's `ping` (which reads).
#[derive(Debug)]
pub(super) struct WriteHealth {
    /// Reference point of `busy_since`.
    epoch: Instant,
    /// Microseconds after `epoch` (plus one, so 0 means idle) at which the writer began the
    /// work it is doing now: a commit that does not come back (frozen filesystem) shows here.
    busy_since: AtomicU64,
    /// Why the last commit failed; `None` after one succeeded.
    last_failure: Mutex<Option<Cause>>,
    /// Set once the database files at the path are no longer the ones written: nothing
    /// written after that could survive a restart, so writes stay refused for good.
    lost: OnceLock<Cause>,
}

impl WriteHealth {
    pub(super) fn new() -> Self {
        WriteHealth {
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            lost: OnceLock::new(),
        }
    }

    /// Marks the writer busy until the returned guard is dropped.
    pub(super) fn busy(self: &Arc<Self>) -> Busy {
        let since = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1;
        self.busy_since.store(since, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// How long the writer has been on its current work, if it is working.
    pub(super) fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let now = self.epoch.elapsed();
                Some(now.saturating_sub(Duration::from_micros(since - 1)))
            }
        }
    }

    /// A commit reached the disk (and the files were still the right ones).
    pub(super) fn succeeded(&self) {
        let mut last = self
            .last_failure
            .lock()
            .expect("write health lock poisoned");
        if last.take().is_some() {
            tracing::info!("writes succeed again");
        }
    }

    /// A commit failed with `cause`.
    pub(super) fn failed(&self, cause: Cause) {
        *self
            .last_failure
            .lock()
            .expect("write health lock poisoned") = Some(cause);
    }

    /// Why the last commit failed, if it did.
    pub(super) fn last_failure(&self) -> Option<Cause> {
        self.last_failure
            .lock()
            .expect("write health lock poisoned")
            .clone()
    }

    /// Records that the database files were lost; only the first cause is kept, and returned.
    pub(super) fn lose(&self, cause: FilesChanged) -> Cause {
        let mut newly_lost = false;
        let lost = self.lost.get_or_init(|| {
            newly_lost = true;
            Arc::new(cause)
        });
        if newly_lost {
            tracing::error!(
                error = %DisplayChain(&**lost),
                "the database files changed under the store: refusing every write from now \
                 on; restart order-service on the database it should use"
            );
        }
        Arc::clone(lost)
    }

    /// Why the database files are lost, if they are.
    pub(super) fn lost(&self) -> Option<Cause> {
        self.lost.get().cloned()
    }
}

/// [`Error::Unavailable`] caused by `cause`, which stays shared with whoever else reports it.
pub(super) fn unavailable(cause: &Cause) -> Error {
    Error::Unavailable(Box::new(SharedCause(Arc::clone(cause))))
}

/// One cause reported to several callers (every write of a failed batch, the health check).
#[derive(Debug)]
struct SharedCause(Cause);

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The writer is busy while this lives.
pub(super) struct Busy(Arc<WriteHealth>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy_since.store(0, Ordering::Relaxed);
    }
}
