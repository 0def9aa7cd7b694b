//! The writers of one replica: a few tasks that take queued writes in batches and commit each
//! batch in one transaction (group commit), every write inside its own savepoint so one failing
//! write does not undo the others. Callers only queue a write and wait for its answer; the
//! transaction runs in a writer task, which no caller can cancel, so a dropped handler future
//! never leaves a half-done transaction on a pooled connection.
//!
//! # One event order across replicas, in commit order
//!
//! A sequence handed out when an event is inserted (a `bigserial`) commits out of order: 11 can
//! be visible before 10, and a reader that has passed 11 never sees 10. Here the sequences come
//! from the one-row `event_log_head`, updated as the LAST statements of the transaction
//! (`UPDATE event_log_head SET last = last + n RETURNING last`, then the batch's n events with
//! those sequences, then a payload-free `NOTIFY`, then `COMMIT`). The row lock of that update
//! is held through COMMIT, so the next transaction gets its sequences only after this one has
//! committed (PostgreSQL makes a commit visible before it releases its locks): sequences are
//! given out in commit order, and a rollback gives them back, so the log has no gaps. A reader
//! that has seen sequence s can never later find a new event below s.
//!
//! This is design (A) of issue 9, chosen over transaction-id ordering (`xid8` with
//! `pg_snapshot_xmin` and one sequencer): it needs nothing PostgreSQL-specific (it works the same
//! on CockroachDB and YugabyteDB), and a reader never stalls behind an unrelated long
//! transaction. Its cost is one event-appending commit at a time cluster-wide; group commit lifts
//! it (one head update per batch of up to [`MAX_BATCH`] writes), and the batches of a replica's
//! [`WRITERS`] tasks overlap in everything before the head update (reading and changing orders,
//! claiming idempotency keys), so only the short head section is serial.

use super::rows::{
    ORDER_COLUMNS, into_error, is_connection_loss, is_retryable, order_from_row, pool_error,
};
use crate::domain::{
    Change, Effect, Error, Order, OrderStatus, Write, WriteOutcome, concurrent_change, decide,
    replay,
};
use crate::error_chain::DisplayChain;
use crate::store::record;
use deadpool_postgres::{Pool, Transaction};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Writer tasks per replica: batches run this many at a time, overlapping up to the head update.
pub(super) const WRITERS: usize = 3;
/// Attempts of one batch that PostgreSQL aborted as a deadlock victim, or that lost its
/// connection before COMMIT (nothing of it was committed, so running it again is safe).
const ATTEMPTS: usize = 4;

/// One queued write and where its answer goes.
pub(super) struct Job {
    pub(super) write: Write,
    pub(super) deadline: Option<Instant>,
    pub(super) reply: oneshot::Sender<Result<WriteOutcome, Error>>,
}

impl Job {
    /// The caller gave up (deadline passed or call dropped): do not start its work.
    fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Starts the writer tasks; they stop when every sender of the queue is gone and it is empty.
pub(super) fn start(pool: Pool, queue: mpsc::Receiver<Job>, committed: Arc<Notify>) {
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..WRITERS {
        let writer = Writer {
            pool: pool.clone(),
            committed: Arc::clone(&committed),
        };
        tokio::spawn(writer.run(Arc::clone(&queue)));
    }
}

struct Writer {
    pool: Pool,
    /// Woken after each commit that appended events: the tailer publishes them.
    committed: Arc<Notify>,
}

/// An event of the batch waiting for its sequence.
struct PendingEvent {
    order: Order,
    previous_status: Option<OrderStatus>,
    reason: String,
    trace_parent: Option<String>,
}

/// Why a write failed inside its savepoint.
enum WriteFailure {
    /// A statement failed: PostgreSQL's own error, for retry decisions.
    Database(tokio_postgres::Error),
    /// The domain refused the write, or a stored row did not decode.
    Refused(Error),
}

impl From<tokio_postgres::Error> for WriteFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        WriteFailure::Database(error)
    }
}

impl From<Error> for WriteFailure {
    fn from(error: Error) -> Self {
        WriteFailure::Refused(error)
    }
}

/// Why a batch was not committed.
enum BatchFailure {
    /// Nothing of it was committed and running it again may succeed.
    Retry(tokio_postgres::Error),
    /// It cannot be committed now (or whether it committed is unknown).
    Fail(Error),
}

impl Writer {
    async fn run(self, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
        loop {
            let batch = {
                let mut queue = queue.lock().await;
                let Some(first) = queue.recv().await else {
                    return;
                };
                let mut batch = Vec::with_capacity(16);
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                batch
            };
            self.commit_batch(batch).await;
        }
    }

    async fn commit_batch(&self, jobs: Vec<Job>) {
        let (jobs, abandoned): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|job| !job.abandoned());
        for job in abandoned {
            let _ = job.reply.send(Err(Error::DeadlineExceeded));
        }
        if jobs.is_empty() {
            return;
        }
        let mut attempt = 1;
        loop {
            match self.attempt(&jobs).await {
                Ok((results, appended)) => {
                    if appended {
                        self.committed.notify_one();
                    }
                    for (job, result) in jobs.into_iter().zip(results) {
                        let _ = job.reply.send(result);
                    }
                    return;
                }
                Err(BatchFailure::Retry(error)) if attempt < ATTEMPTS => {
                    tracing::debug!(
                        error = %DisplayChain(&error),
                        attempt,
                        "a batch of writes was rolled back (deadlock or lost connection); \
                         running it again"
                    );
                    attempt += 1;
                    // Deadlock victims: let the winner finish first.
                    tokio::time::sleep(Duration::from_millis(2 * attempt as u64)).await;
                }
                Err(BatchFailure::Retry(error)) => {
                    return fail_all(jobs, into_error(error));
                }
                Err(BatchFailure::Fail(error)) => return fail_all(jobs, error),
            }
        }
    }

    /// Runs the batch in one transaction: each write in its savepoint, then the head section.
    /// Returns every write's answer and whether events were appended.
    async fn attempt(
        &self,
        jobs: &[Job],
    ) -> Result<(Vec<Result<WriteOutcome, Error>>, bool), BatchFailure> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|error| BatchFailure::Fail(pool_error(error)))?;
        let before_commit = |error: tokio_postgres::Error| {
            if is_retryable(&error) || is_connection_loss(&error) {
                BatchFailure::Retry(error)
            } else {
                BatchFailure::Fail(into_error(error))
            }
        };
        let tx = client.transaction().await.map_err(before_commit)?;
        let mut results = Vec::with_capacity(jobs.len());
        let mut events = Vec::new();
        // The previous write's savepoint is released together with the next one's start (one
        // round trip); the last one is released by COMMIT.
        let mut savepoint = false;
        for job in jobs {
            // Waiting for the connection or a retry may have outlived a caller's deadline.
            if job.abandoned() {
                results.push(Err(Error::DeadlineExceeded));
                continue;
            }
            tx.batch_execute(if savepoint {
                "RELEASE SAVEPOINT write; SAVEPOINT write"
            } else {
                "SAVEPOINT write"
            })
            .await
            .map_err(before_commit)?;
            savepoint = true;
            match apply(&tx, &job.write).await {
                Ok((outcome, event)) => {
                    events.extend(event);
                    results.push(Ok(outcome));
                }
                Err(WriteFailure::Database(error))
                    if is_retryable(&error) || is_connection_loss(&error) =>
                {
                    return Err(BatchFailure::Retry(error));
                }
                Err(failure) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT write")
                        .await
                        .map_err(before_commit)?;
                    results.push(Err(match failure {
                        WriteFailure::Database(error) => {
                            tracing::warn!(
                                error = %DisplayChain(&error),
                                "a write failed; the others of its batch go on"
                            );
                            into_error(error)
                        }
                        WriteFailure::Refused(error) => error,
                    }));
                }
            }
        }
        let appended = !events.is_empty();
        if appended {
            append_events(&tx, events).await.map_err(before_commit)?;
        }
        // Whether a COMMIT whose answer was lost took effect is unknown: the callers get
        // UNAVAILABLE and retry with their idempotency keys, which makes that safe.
        tx.commit()
            .await
            .map_err(|error| BatchFailure::Fail(into_error(error)))?;
        Ok((results, appended))
    }
}

/// The head section, the last statements before COMMIT: takes `events.len()` sequences from the
/// log head (whose row lock is then held through COMMIT), appends the events with them, and
/// notifies the other replicas' tailers (once per batch, without payload).
async fn append_events(
    tx: &Transaction<'_>,
    events: Vec<PendingEvent>,
) -> Result<(), tokio_postgres::Error> {
    let count = events.len() as i64;
    let head = tx
        .prepare_cached("UPDATE event_log_head SET last = last + $1 RETURNING last")
        .await?;
    let last: i64 = tx.query_one(&head, &[&count]).await?.get(0);
    let first = last - count + 1;
    let mut sequences = Vec::with_capacity(events.len());
    let mut order_ids = Vec::with_capacity(events.len());
    let mut previous = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    let mut reasons = Vec::with_capacity(events.len());
    let mut snapshots = Vec::with_capacity(events.len());
    let mut trace_parents = Vec::with_capacity(events.len());
    for (offset, event) in events.into_iter().enumerate() {
        sequences.push(first + offset as i64);
        order_ids.push(event.order.id.as_str().to_owned());
        previous.push(event.previous_status.map_or(0, OrderStatus::number));
        times.push(event.order.update_time.0);
        snapshots.push(record::encode_order(&event.order));
        reasons.push(event.reason);
        trace_parents.push(event.trace_parent);
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO order_events
                 (sequence, order_id, previous_status, event_time, reason, snapshot,
                  trace_parent)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::bigint[],
                                  $5::text[], $6::text[], $7::text[])",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &sequences,
            &order_ids,
            &previous,
            &times,
            &reasons,
            &snapshots,
            &trace_parents,
        ],
    )
    .await?;
    tx.batch_execute("NOTIFY order_events").await
}

/// Applies one write inside the current savepoint: idempotency claim, the change, the
/// idempotency record's response. What each of them means is decided in the domain
/// ([`crate::domain::replay`], [`crate::domain::decide`]); this only reads and writes rows.
/// The event is returned to be appended in the head section.
async fn apply(
    tx: &Transaction<'_>,
    write: &Write,
) -> Result<(WriteOutcome, Option<PendingEvent>), WriteFailure> {
    let fingerprint = write.fingerprint();
    let fingerprint: &[u8] = &fingerprint.0;
    if let Some(request_id) = &write.request_id {
        // The claim: a concurrent claimant's uncommitted row makes this wait for its
        // transaction; after its COMMIT this inserts nothing and the first response is read.
        let claim = tx
            .prepare_cached(
                "INSERT INTO idempotency_keys (principal, request_id, fingerprint, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .await?;
        let claimed = tx
            .execute(
                &claim,
                &[
                    &write.principal.as_str(),
                    &request_id.as_str(),
                    &fingerprint,
                    &write.now.0,
                ],
            )
            .await?;
        if claimed == 0 {
            let stored = tx
                .prepare_cached(
                    "SELECT fingerprint, response FROM idempotency_keys
                     WHERE principal = $1 AND request_id = $2",
                )
                .await?;
            let row = tx
                .query_opt(&stored, &[&write.principal.as_str(), &request_id.as_str()])
                .await?;
            // Gone again (pruned in between), or claimed but not answered: a retry resolves it.
            let Some(row) = row else {
                return Err(Error::RequestInProgress.into());
            };
            let stored_fingerprint: Vec<u8> = row.get(0);
            let Some(response) = row.get::<_, Option<String>>(1) else {
                return Err(Error::RequestInProgress.into());
            };
            let first_response = record::decode_order(&response).map_err(Error::internal)?;
            return Ok((replay(write, &stored_fingerprint, first_response)?, None));
        }
    }
    let current = match &write.change {
        Change::Create(_) => None,
        Change::UpdateStatus(update) => {
            let select = tx
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1 FOR UPDATE"
                ))
                .await?;
            match tx.query_opt(&select, &[&update.order_id.as_str()]).await? {
                Some(row) => Some(order_from_row(&row, 0)?),
                None => None,
            }
        }
    };
    let effect = decide(&write.change, current, write.now)?;
    let event = match &effect {
        Effect::Insert(order) => Some(PendingEvent {
            order: order.clone(),
            previous_status: None,
            reason: String::new(),
            trace_parent: write.trace_parent.clone(),
        }),
        Effect::Update { from, to } => Some(PendingEvent {
            order: to.clone(),
            previous_status: Some(from.status),
            reason: write.change.reason().to_owned(),
            trace_parent: write.trace_parent.clone(),
        }),
        Effect::Unchanged(_) => None,
    };
    let order = effect.order().clone();
    // The change and the idempotency record's response, pipelined on the connection (sent
    // together, answered in order): the change's failure is the one reported.
    let change = async {
        match &effect {
            Effect::Insert(order) => insert_order(tx, order).await,
            Effect::Update { from, to } => update_order(tx, from, to).await,
            Effect::Unchanged(_) => Ok(()),
        }
    };
    let response = record::encode_order(&order);
    let answer = async {
        if let Some(request_id) = &write.request_id {
            let answer = tx
                .prepare_cached(
                    "UPDATE idempotency_keys SET response = $3
                     WHERE principal = $1 AND request_id = $2",
                )
                .await?;
            tx.execute(
                &answer,
                &[&write.principal.as_str(), &request_id.as_str(), &response],
            )
            .await?;
        }
        Ok::<_, WriteFailure>(())
    };
    futures::try_join!(change, answer)?;
    Ok((
        WriteOutcome {
            order,
            replayed: false,
        },
        event,
    ))
}

async fn insert_order(tx: &Transaction<'_>, order: &Order) -> Result<(), WriteFailure> {
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .await?;
    tx.execute(
        &insert,
        &[
            &order.id.as_str(),
            &order.customer_id.as_str(),
            &order.currency.as_str(),
            &record::encode_items(&order.items),
            &order.total_cents,
            &order.status.number(),
            &order.version,
            &order.create_time.0,
            &order.update_time.0,
        ],
    )
    .await?;
    Ok(())
}

/// Moves the row still at `from`'s version to `to`; a row at another version is a lost race
/// (it cannot be, under the `FOR UPDATE` lock taken when it was read, but the check stays).
async fn update_order(tx: &Transaction<'_>, from: &Order, to: &Order) -> Result<(), WriteFailure> {
    let update = tx
        .prepare_cached(
            "UPDATE orders SET status = $1, version = $2, update_time = $3
             WHERE order_id = $4 AND version = $5",
        )
        .await?;
    let updated = tx
        .execute(
            &update,
            &[
                &to.status.number(),
                &to.version,
                &to.update_time.0,
                &to.id.as_str(),
                &from.version,
            ],
        )
        .await?;
    if updated == 1 {
        return Ok(());
    }
    let version = tx
        .prepare_cached("SELECT version FROM orders WHERE order_id = $1")
        .await?;
    let actual = tx
        .query_opt(&version, &[&from.id.as_str()])
        .await?
        .map(|row| row.get::<_, i64>(0));
    Err(concurrent_change(from, actual).into())
}

/// Answers every write of a batch that could not be committed with the same cause.
fn fail_all(jobs: Vec<Job>, error: Error) {
    tracing::warn!(
        error = %DisplayChain(&error),
        writes = jobs.len(),
        "a batch of writes was not committed"
    );
    let text = DisplayChain(&error).to_string();
    for job in jobs {
        let answer = match &error {
            Error::Internal(_) => Error::Internal(Box::new(CauseText(text.clone()))),
            _ => Error::Unavailable(Box::new(CauseText(text.clone()))),
        };
        let _ = job.reply.send(Err(answer));
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
