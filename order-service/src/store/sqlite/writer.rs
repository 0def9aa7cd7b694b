//! The single writer: one thread owns the only writing connection and applies writes in batches.
//! Concurrent writes that queue up while a commit is syncing go into the next transaction
//! together (group commit). One failing write does not undo the others: a write that fails
//! before changing anything (an unknown order, a refused transition, a reused key) simply
//! answers its error; one that fails after changing rows takes the transaction down with it,
//! and the others are applied again in a new one. One writer also means SQLite never answers
//! SQLITE_BUSY between our own writes, and sequence order equals commit order, which the live
//! event feed depends on.

use super::apply::{Failed, apply};
use super::cache::OrderCache;
use super::checkpointer::{Checkpoint, CheckpointLock, checkpoint};
use super::files::DatabaseFiles;
use super::rows::into_error;
use super::statements::Statements;
use super::write_health::{Cause, WriteHealth, unavailable};
use crate::domain::{Error, UnixMicros, Write, WriteOutcome};
use crate::error_chain::DisplayChain;
use crate::store::{LiveEvents, Retention};
use rusqlite::{Connection, TransactionBehavior, params};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;
/// How much the health check's probe write takes on disk (WAL frames) while writes are failing:
/// room for several batches of orders, so that a probe succeeding means writes can succeed.
const PROBE_ROOM_BYTES: i64 = 256 * 1024;

/// Work for the writer thread.
pub(super) enum Command {
    /// Apply a write and answer on `reply`.
    Write {
        write: Write,
        deadline: Option<Instant>,
        reply: oneshot::Sender<Result<WriteOutcome, Error>>,
    },
    /// Remove records past their retention and answer when done.
    Prune {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Run other work (webhook bookkeeping) on the writing connection; it answers itself.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Commit a one-row write, to learn whether writes succeed again after they failed.
    Probe {
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// The writer thread's connection and everything it reports into.
pub(super) struct Writer {
    pub(super) conn: Connection,
    /// Where committed events go, after the commit is known to be durable.
    pub(super) live: LiveEvents,
    /// Orders just written, so a read after an acknowledged write sees it.
    pub(super) cache: Arc<OrderCache>,
    pub(super) retention: Retention,
    /// The files a commit must be durable in before it is acknowledged.
    pub(super) files: Arc<DatabaseFiles>,
    /// How writes are going, for the health check.
    pub(super) health: Arc<WriteHealth>,
    /// WAL size past which the writer itself checkpoints it (TRUNCATE) between batches.
    pub(super) wal_limit_bytes: u64,
    /// Shared with the checkpoint thread: one checkpoint at a time, waited for.
    pub(super) checkpoint_lock: CheckpointLock,
}

impl Writer {
    /// Runs the writer until every sender of `commands` is gone, then checkpoints the WAL
    /// into the database and empties it, so a stopped service leaves no large WAL behind.
    pub(super) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut wal_bound = WalBound::default();
        while let Some(first) = commands.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match commands.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let mut writes = Vec::with_capacity(batch.len());
            for command in batch.drain(..) {
                match command {
                    Command::Write {
                        write,
                        deadline,
                        reply,
                    } => writes.push(Job {
                        write,
                        deadline,
                        reply,
                    }),
                    Command::Prune { reply } => {
                        let _ = reply.send(self.prune());
                    }
                    Command::Probe { reply } => {
                        let _ = reply.send(self.probe());
                    }
                    Command::Run(work) => {
                        // A lost database file fails the work's own statements; its caller
                        // hears of it through the work's answer.
                        let _busy = self.health.busy();
                        work(&mut self.conn);
                    }
                }
            }
            if !writes.is_empty() {
                let _busy = self.health.busy();
                self.commit_batch(writes);
            }
            wal_bound.keep(&self);
        }
        if self.health.lost().is_none() {
            match checkpoint(&self.conn, Checkpoint::Truncate, &self.checkpoint_lock) {
                Ok(done) if done.complete() => tracing::debug!("WAL checkpointed and emptied"),
                Ok(_) => tracing::warn!("the WAL could not be emptied at shutdown: it was busy"),
                Err(error) => tracing::warn!(
                    error = %DisplayChain(&error),
                    "the WAL could not be emptied at shutdown"
                ),
            }
        }
        tracing::debug!("sqlite writer stopped");
    }

    fn commit_batch(&mut self, jobs: Vec<Job>) {
        let (jobs, abandoned): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| !j.abandoned());
        for job in abandoned {
            let _ = job.reply.send(Err(Error::DeadlineExceeded));
        }
        if jobs.is_empty() {
            return;
        }
        if let Some(lost) = self.health.lost() {
            return fail_all(jobs, &lost);
        }
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(error) => return fail_all(jobs, &record_failure(&self.health, error)),
        };
        let mut results = Vec::with_capacity(jobs.len());
        let mut events = Vec::new();
        let mut ended_by = None;
        let mut statements = Statements::new(&tx);
        for (index, job) in jobs.iter().enumerate() {
            // The lock wait above may have outlived a caller's deadline: check again per write.
            if job.abandoned() {
                results.push(Err(Error::DeadlineExceeded));
                continue;
            }
            // No savepoint per write: each cost more than the write's own rows (parsing
            // SAVEPOINT and RELEASE, and copying every page the write touched into a statement
            // journal in case of a rollback that almost never comes).
            match apply(&mut statements, &job.write) {
                Ok((outcome, event)) => {
                    events.extend(event);
                    results.push(Ok(outcome));
                }
                // Nothing of this write is in the transaction: it fails alone, here. Unless the
                // error (I/O, full disk, out of memory) made SQLite roll the whole transaction
                // back: the writes before this one are gone too.
                Err(Failed::Unchanged(error)) if !tx.is_autocommit() => results.push(Err(error)),
                Err(Failed::Unchanged(error) | Failed::Changed(error)) => {
                    ended_by = Some((index, error));
                    break;
                }
            }
        }
        drop(statements);
        if let Some((index, error)) = ended_by {
            // Answer the write that ended the transaction, and apply the others again in a
            // new one (nothing of theirs was committed), so one bad write fails alone.
            let rolled_back = tx.is_autocommit();
            drop(tx);
            if rolled_back {
                tracing::error!(
                    error = %DisplayChain(&error),
                    "a write ended its batch's transaction; retrying the rest of the batch"
                );
                record_failure(&self.health, CauseText(DisplayChain(&error).to_string()));
            } else {
                tracing::warn!(
                    error = %DisplayChain(&error),
                    "a write failed after changing rows; retrying the rest of its batch without it"
                );
            }
            let mut jobs = jobs;
            let failed = jobs.remove(index);
            let _ = failed.reply.send(Err(error));
            return self.commit_batch(jobs);
        }
        if let Err(error) = tx.commit() {
            tracing::error!(error = %DisplayChain(&error), "committing a batch of writes failed");
            return fail_all(jobs, &record_failure(&self.health, error));
        }
        // The commit is synced to the WAL (synchronous=FULL). It counts only if the WAL and
        // the database are still the files at the database's path: checked after the sync
        // and before anyone hears of the commit (callers, watchers, the cache), so no
        // acknowledgement can come from a file that was deleted or replaced.
        if let Err(lost) = self.durable_at_path() {
            return fail_all(jobs, &lost);
        }
        // Before any caller hears back, so a read after an acknowledged write sees it.
        for outcome in results.iter().flatten().filter(|outcome| !outcome.replayed) {
            self.cache.put(outcome.order.clone());
        }
        for event in events {
            self.live.publish(event);
        }
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }

    /// Whether what was just committed is durable in the files the database's path names;
    /// records the outcome for the health check either way.
    fn durable_at_path(&self) -> Result<(), Cause> {
        match self.files.check() {
            Ok(_) => {
                self.health.succeeded();
                Ok(())
            }
            Err(changed) => Err(self.health.lose(changed)),
        }
    }

    /// Commits a change to `store_meta` as large as [`PROBE_ROOM_BYTES`]: a real write (WAL
    /// frames and a sync) that tells whether writes succeed, without touching any order. Its
    /// size matters: a one-row probe fitted into space a full disk still had while every create
    /// failed, so health said SERVING (and never NOT_SERVING) while no order could be made.
    fn probe(&mut self) -> Result<(), Error> {
        if let Some(lost) = self.health.lost() {
            return Err(unavailable(&lost));
        }
        let _busy = self.health.busy();
        let written = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|tx| {
                tx.execute(
                    "INSERT INTO store_meta (name, value) VALUES ('write_probe', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    params![UnixMicros::now().0],
                )?;
                // Rewritten whole on every probe, so its pages go to the WAL each time.
                tx.execute(
                    "INSERT INTO store_meta (name, value) VALUES ('write_probe_room', zeroblob(?1))
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    params![PROBE_ROOM_BYTES],
                )?;
                tx.commit()
            });
        match written {
            Err(error) => Err(unavailable(&record_failure(&self.health, error))),
            Ok(()) => self.durable_at_path().map_err(|lost| unavailable(&lost)),
        }
    }

    fn prune(&mut self) -> Result<(), Error> {
        if let Some(lost) = self.health.lost() {
            return Err(unavailable(&lost));
        }
        let _busy = self.health.busy();
        prune(&mut self.conn, self.retention).map_err(into_error)
    }
}

/// Keeps the WAL under the writer's limit. The checkpoint thread's PASSIVE checkpoints never
/// finish while commits keep coming, and SQLite only starts the WAL over once a checkpoint
/// has caught up: under steady writes it grew by tens of MiB a second. Here, between two
/// batches, the writer itself runs a TRUNCATE checkpoint once the WAL file is past the limit:
/// no commit can slip in meanwhile, so it cannot be starved, and it only has to copy what the
/// background checkpoints have not. TRUNCATE rather than RESTART (which keeps the file for
/// reuse and measured up to 10 % more creates/s): a WAL holding no spare space makes a full
/// disk show in the next write, the health check's small probe included; with spare space the
/// probe succeeded while creates failed.
#[derive(Default)]
struct WalBound {
    /// The last attempt failed (logged once, not after every batch).
    failing: bool,
}

impl WalBound {
    fn keep(&mut self, writer: &Writer) {
        let wal_bytes = std::fs::metadata(writer.files.wal_path()).map_or(0, |m| m.len());
        if wal_bytes <= writer.wal_limit_bytes || writer.health.lost().is_some() {
            return;
        }
        let _busy = writer.health.busy();
        let started = Instant::now();
        match checkpoint(&writer.conn, Checkpoint::Truncate, &writer.checkpoint_lock) {
            Ok(done) if done.complete() => {
                tracing::debug!(
                    wal_bytes,
                    copied_pages = done.checkpointed,
                    took = ?started.elapsed(),
                    "WAL past its limit: checkpointed and emptied"
                );
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the WAL is emptied again");
                }
            }
            Ok(_) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    wal_bytes,
                    "WAL past its limit but busy (a long read?): it stays until the next try, \
                     after the next batch"
                );
            }
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    error = %DisplayChain(&error),
                    wal_bytes,
                    "WAL past its limit and its checkpoint failed; trying again after the next batch"
                );
            }
            Ok(_) | Err(_) => {}
        }
    }
}

struct Job {
    write: Write,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<WriteOutcome, Error>>,
}

impl Job {
    /// The caller gave up (deadline passed or call dropped): do not start its work.
    fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Records a failed commit for the health check and returns its cause.
fn record_failure(
    health: &WriteHealth,
    error: impl std::error::Error + Send + Sync + 'static,
) -> Cause {
    let cause: Cause = Arc::new(error);
    health.failed(Arc::clone(&cause));
    cause
}

/// Answers every write of a batch that could not be committed with the same cause.
fn fail_all(jobs: Vec<Job>, cause: &Cause) {
    for job in jobs {
        let _ = job.reply.send(Err(unavailable(cause)));
    }
}

/// A cause known only by its text (with its chain already written out).
#[derive(Debug)]
struct CauseText(String);

impl std::fmt::Display for CauseText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CauseText {}

/// Deletes events and idempotency keys past their retention. An order's latest event is kept
/// (it is the order's current state for watchers); `events_pruned_through` records the highest
/// sequence deleted, below which resuming is refused.
fn prune(conn: &mut Connection, retention: Retention) -> rusqlite::Result<()> {
    let now = UnixMicros::now();
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let event_cutoff = now.minus_micros(micros(retention.events));
    let pruned_through: Option<i64> = tx.query_row(
        "SELECT MAX(sequence) FROM order_events
         WHERE event_time < ?1
           AND sequence NOT IN (SELECT MAX(sequence) FROM order_events GROUP BY order_id)",
        params![event_cutoff.0],
        |row| row.get(0),
    )?;
    if let Some(through) = pruned_through {
        let deleted = tx.execute(
            "DELETE FROM order_events
             WHERE sequence <= ?1
               AND sequence NOT IN (SELECT MAX(sequence) FROM order_events GROUP BY order_id)",
            params![through],
        )?;
        tx.execute(
            "UPDATE store_meta SET value = MAX(value, ?1) WHERE name = 'events_pruned_through'",
            params![through],
        )?;
        tracing::info!(deleted, through, "pruned old events");
    }
    let key_cutoff = now.minus_micros(micros(retention.idempotency_keys));
    let deleted_keys = tx.execute(
        "DELETE FROM idempotency_keys WHERE created_at < ?1",
        params![key_cutoff.0],
    )?;
    if deleted_keys > 0 {
        tracing::info!(deleted = deleted_keys, "pruned old idempotency keys");
    }
    tx.execute(
        "DELETE FROM webhook_deliveries WHERE attempt_time < ?1",
        params![event_cutoff.0],
    )?;
    tx.execute(
        "DELETE FROM webhook_idempotency_keys WHERE created_at < ?1",
        params![key_cutoff.0],
    )?;
    tx.commit()
}
