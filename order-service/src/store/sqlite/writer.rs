//! The single writer: one thread owns the only writing connection and applies writes in batches.
//! Concurrent writes that queue up while a commit is syncing go into the next transaction
//! together (group commit), each inside its own savepoint so one failing write does not undo the
//! others. One writer also means SQLite never answers SQLITE_BUSY between our own writes, and
//! sequence order equals commit order, which the live event feed depends on.

use super::cache::OrderCache;
use super::rows::{ORDER_COLUMNS, into_error, select_order};
use crate::domain::{
    Change, CreateOrder, Error, Order, OrderEvent, OrderStatus, UnixMicros, UpdateStatus, Write,
    WriteOutcome,
};
use crate::error_chain::DisplayChain;
use crate::store::{LiveEvents, Retention};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

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
}

/// Runs the writer until every sender of `commands` is gone.
pub(super) fn run(
    mut conn: Connection,
    mut commands: mpsc::Receiver<Command>,
    live: LiveEvents,
    cache: Arc<OrderCache>,
    retention: Retention,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
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
                    let _ = reply.send(prune(&mut conn, retention).map_err(into_error));
                }
            }
        }
        if !writes.is_empty() {
            commit_batch(&mut conn, writes, &live, &cache);
        }
    }
    tracing::debug!("sqlite writer stopped");
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

fn commit_batch(conn: &mut Connection, jobs: Vec<Job>, live: &LiveEvents, cache: &OrderCache) {
    let (jobs, abandoned): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| !j.abandoned());
    for job in abandoned {
        let _ = job.reply.send(Err(Error::DeadlineExceeded));
    }
    if jobs.is_empty() {
        return;
    }
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => return fail_all(jobs, error),
    };
    let mut results = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    let mut ended_by = None;
    for (index, job) in jobs.iter().enumerate() {
        // The lock wait above may have outlived a caller's deadline: check again per write.
        if job.abandoned() {
            results.push(Err(Error::DeadlineExceeded));
            continue;
        }
        let applied = tx.savepoint().map_err(into_error).and_then(|savepoint| {
            let outcome = apply(&savepoint, &job.write)?;
            savepoint.commit().map_err(into_error)?;
            Ok(outcome)
        });
        match applied {
            Ok((outcome, event)) => {
                events.extend(event);
                results.push(Ok(outcome));
            }
            Err(error) => {
                // Some errors (I/O, full disk, out of memory) make SQLite roll back the whole
                // transaction, not just the savepoint: the writes before this one are gone too.
                if tx.is_autocommit() {
                    ended_by = Some((index, error));
                    break;
                }
                results.push(Err(error));
            }
        }
    }
    if let Some((index, error)) = ended_by {
        // Answer the write that ended the transaction, and apply the others again in a new
        // one (nothing of theirs was committed), so one bad write fails alone.
        drop(tx);
        tracing::error!(
            error = %DisplayChain(&error),
            "a write ended its batch's transaction; retrying the rest of the batch"
        );
        let mut jobs = jobs;
        let failed = jobs.remove(index);
        let _ = failed.reply.send(Err(error));
        return commit_batch(conn, jobs, live, cache);
    }
    if let Err(error) = tx.commit() {
        tracing::error!(error = %error, "committing a batch of writes failed");
        return fail_all(jobs, error);
    }
    // Before any caller hears back, so a read after an acknowledged write sees it.
    for outcome in results.iter().flatten().filter(|outcome| !outcome.replayed) {
        cache.put(outcome.order.clone());
    }
    for event in events {
        live.publish(event);
    }
    for (job, result) in jobs.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
}

/// Answers every write of a batch that could not be committed with the same cause.
fn fail_all(jobs: Vec<Job>, cause: impl std::error::Error + Send + Sync + 'static) {
    let shared: Arc<dyn std::error::Error + Send + Sync> = Arc::new(cause);
    for job in jobs {
        let cause = Box::new(SharedCause(Arc::clone(&shared)));
        let _ = job.reply.send(Err(Error::Unavailable(cause)));
    }
}

/// Applies one write inside the current savepoint: idempotency check, the change, its event,
/// the idempotency record.
fn apply(conn: &Connection, write: &Write) -> Result<(WriteOutcome, Option<OrderEvent>), Error> {
    let fingerprint = write.fingerprint();
    if let Some(request_id) = &write.request_id {
        let stored: Option<(Vec<u8>, String)> = conn
            .prepare_cached(
                "SELECT fingerprint, response FROM idempotency_keys
                 WHERE principal = ?1 AND request_id = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![write.principal.as_str(), request_id.as_str()],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
            })
            .map_err(into_error)?;
        if let Some((stored_fingerprint, response)) = stored {
            if stored_fingerprint != fingerprint.0 {
                return Err(Error::IdempotencyKeyReused);
            }
            let order: Order = serde_json::from_str(&response).map_err(Error::internal)?;
            return Ok((
                WriteOutcome {
                    order,
                    replayed: true,
                },
                None,
            ));
        }
    }
    let (order, event) = match &write.change {
        Change::Create(create) => create_order(conn, create, write.now)?,
        Change::UpdateStatus(update) => update_status(conn, update, write.now)?,
    };
    if let Some(request_id) = &write.request_id {
        let response = serde_json::to_string(&order).map_err(Error::internal)?;
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (principal, request_id, fingerprint, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                write.principal.as_str(),
                request_id.as_str(),
                &fingerprint.0[..],
                response,
                write.now.0
            ])
        })
        .map_err(into_error)?;
    }
    Ok((
        WriteOutcome {
            order,
            replayed: false,
        },
        event,
    ))
}

fn create_order(
    conn: &Connection,
    create: &CreateOrder,
    now: UnixMicros,
) -> Result<(Order, Option<OrderEvent>), Error> {
    let order = create
        .order
        .clone()
        .into_order(create.order_id.clone(), now);
    let items = serde_json::to_string(&order.items).map_err(Error::internal)?;
    conn.prepare_cached(&format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))
    .and_then(|mut statement| {
        statement.execute(params![
            order.id.as_str(),
            order.customer_id.as_str(),
            order.currency.as_str(),
            items,
            order.total_cents,
            order.status.number(),
            order.version,
            order.create_time.0,
            order.update_time.0,
        ])
    })
    .map_err(into_error)?;
    let event = append_event(conn, &order, None, "")?;
    Ok((order, Some(event)))
}

fn update_status(
    conn: &Connection,
    update: &UpdateStatus,
    now: UnixMicros,
) -> Result<(Order, Option<OrderEvent>), Error> {
    let current = select_order(conn, &update.order_id)?;
    let Some(changed) = current.change_status(update.target, update.expected_version, now)? else {
        return Ok((current, None));
    };
    conn.prepare_cached(
        "UPDATE orders SET status = ?1, version = ?2, update_time = ?3
         WHERE order_id = ?4 AND version = ?5",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            changed.status.number(),
            changed.version,
            changed.update_time.0,
            changed.id.as_str(),
            current.version,
        ])
    })
    .map_err(into_error)?;
    let event = append_event(conn, &changed, Some(current.status), &update.reason)?;
    Ok((changed, Some(event)))
}

fn append_event(
    conn: &Connection,
    order: &Order,
    previous_status: Option<OrderStatus>,
    reason: &str,
) -> Result<OrderEvent, Error> {
    let snapshot = serde_json::to_string(order).map_err(Error::internal)?;
    let event_time = order.update_time;
    conn.prepare_cached(
        "INSERT INTO order_events (order_id, previous_status, event_time, reason, snapshot)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            order.id.as_str(),
            previous_status.map_or(0, OrderStatus::number),
            event_time.0,
            reason,
            snapshot
        ])
    })
    .map_err(into_error)?;
    Ok(OrderEvent {
        sequence: conn.last_insert_rowid() as u64,
        order: order.clone(),
        previous_status,
        event_time,
    })
}

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
    tx.commit()
}

/// One cause reported to every write of a failed batch.
#[derive(Debug)]
struct SharedCause(Arc<dyn std::error::Error + Send + Sync>);

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
