//! WAL checkpoints on a thread of their own. SQLite's automatic checkpoint runs inside the
//! commit that crosses its threshold, on the writer thread, where the benchmark found it taking
//! a fifth of the writer's time; here this thread copies the WAL back into the database a few
//! times a second without blocking the writer (PASSIVE), empties it (TRUNCATE) once writes
//! pause, and reports its size. A PASSIVE checkpoint never catches up with a writer that
//! commits continuously, so the writer bounds the WAL itself (see `writer.rs`).

use super::schema::open_checkpointer;
use super::thread_exit::ThreadExit;
use crate::error_chain::DisplayChain;
use order_status_telemetry::Metrics;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(250);
/// How long dropping the checkpointer waits for its thread's last checkpoint.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A checkpoint mode (`PRAGMA wal_checkpoint(MODE)`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Checkpoint {
    /// Copy what it can without waiting for the writer or readers.
    Passive,
    /// Wait (busy handler) for the writer and for readers of older snapshots, copy
    /// everything, and truncate the WAL file to zero bytes.
    Truncate,
}

/// What a checkpoint did, in WAL frames (pages).
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkpointed {
    /// It could not do everything it was asked (SQLITE_BUSY).
    pub(super) busy: bool,
    /// Frames in the WAL.
    pub(super) frames: i64,
    /// Frames copied into the database so far.
    pub(super) checkpointed: i64,
}

impl Checkpointed {
    /// Everything in the WAL is in the database now.
    pub(super) fn complete(self) -> bool {
        !self.busy && self.frames == self.checkpointed
    }
}

/// Taken around every checkpoint this process runs. SQLite lets one checkpoint run at a time
/// and answers SQLITE_BUSY at once, without waiting, to a second one: without this, the
/// writer's TRUNCATE kept failing while a background PASSIVE was copying, and the WAL grew
/// meanwhile. With it, the writer waits for that PASSIVE to finish instead.
pub(super) type CheckpointLock = Arc<Mutex<()>>;

/// Runs one checkpoint on `conn`, holding `lock`.
pub(super) fn checkpoint(
    conn: &Connection,
    mode: Checkpoint,
    lock: &Mutex<()>,
) -> rusqlite::Result<Checkpointed> {
    let _only_checkpoint = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let pragma = match mode {
        Checkpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Checkpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    conn.query_row(pragma, [], |row| {
        Ok(Checkpointed {
            busy: row.get::<_, i64>(0)? != 0,
            frames: row.get(1)?,
            checkpointed: row.get(2)?,
        })
    })
}

/// Stops the checkpoint thread when dropped, and waits a little for it to finish.
pub(super) struct Checkpointer {
    /// Wakes and stops the thread.
    stop: mpsc::Sender<()>,
    /// Waits for the thread (when dropped, after `Drop::drop` sent the stop).
    _exit: ThreadExit,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (whose WAL is `wal`), reporting the WAL's
    /// size into `metrics` when given.
    pub(super) fn start(
        path: PathBuf,
        wal: PathBuf,
        wal_limit_bytes: u64,
        lock: CheckpointLock,
        metrics: Option<Metrics>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let (exiting, exit) = ThreadExit::new("sqlite-checkpoint", STOP_TIMEOUT);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let _exiting = exiting;
                run(
                    &path,
                    &wal,
                    wal_limit_bytes,
                    &lock,
                    metrics.as_ref(),
                    &stopped,
                );
            })?;
        Ok(Checkpointer { stop, _exit: exit })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // A checkpoint in progress finishes first; then `_exit` waits for the thread.
        let _ = self.stop.send(());
    }
}

fn run(
    path: &Path,
    wal: &Path,
    wal_limit_bytes: u64,
    lock: &Mutex<()>,
    metrics: Option<&Metrics>,
    stopped: &mpsc::Receiver<()>,
) {
    let conn = match open_checkpointer(path, wal_limit_bytes) {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(
                error = %DisplayChain(&error),
                "cannot open the checkpoint connection; the WAL is only bounded by the writer"
            );
            return;
        }
    };
    let wal_size = || std::fs::metadata(wal).map_or(0, |m| m.len());
    let mut failing = false;
    let mut previous_frames = -1;
    loop {
        match stopped.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut size = wal_size();
        match checkpoint(&conn, Checkpoint::Passive, lock) {
            Ok(done) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("WAL checkpoints succeed again");
                }
                // Everything is copied and no commit came since the last look: writes have
                // paused, so emptying the WAL file now costs the writer nothing.
                let idle = done.frames == std::mem::replace(&mut previous_frames, done.frames);
                if done.complete() && size > 0 && idle {
                    match checkpoint(&conn, Checkpoint::Truncate, lock) {
                        Ok(_) => size = wal_size(),
                        Err(error) => tracing::debug!(
                            error = %DisplayChain(&error),
                            "emptying the idle WAL failed"
                        ),
                    }
                }
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(error = %DisplayChain(&error), "WAL checkpoint failed");
            }
            Err(_) => {}
        }
        if let Some(metrics) = metrics {
            metrics.record_wal_size(size);
        }
    }
}
