//! WAL checkpoints on a thread of their own. SQLite's automatic checkpoint runs inside the
//! commit that crosses its threshold, on the writer thread, where the benchmark found it taking
//! a fifth of the writer's time; here the writer never checkpoints and this thread copies the
//! WAL back into the database a few times a second without blocking the writer (PASSIVE).

use super::schema::open_checkpointer;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(250);

/// Stops the checkpoint thread when dropped (after one last checkpoint).
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`.
    pub(super) fn start(path: PathBuf) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&path, &stopped))?;
        Ok(Checkpointer { stop })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(path: &std::path::Path, stop: &AtomicBool) {
    let conn = match open_checkpointer(path) {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(%error, "cannot open the checkpoint connection; the WAL will grow");
            return;
        }
    };
    loop {
        std::thread::sleep(INTERVAL);
        let stopping = stop.load(Ordering::Relaxed);
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "WAL checkpoint failed");
        }
        if stopping {
            return;
        }
    }
}
