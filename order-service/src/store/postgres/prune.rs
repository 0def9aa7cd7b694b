//! Pruning of old events and idempotency keys, once across the cluster: every replica runs it
//! on its schedule, but the transaction first takes a transaction-level advisory lock without
//! waiting, and a replica that does not get it returns at once (another one is pruning now).
//! The retention rules are the SQLite store's: an order's latest event is always kept, and
//! `events_pruned_through` records the highest sequence deleted, below which resuming is
//! refused.

use super::rows::{into_error, pool_error};
use crate::domain::{Error, UnixMicros};
use crate::store::Retention;
use deadpool_postgres::Pool;
use std::time::Duration;

/// The advisory lock key of pruning ("orders-p" in ASCII).
pub(super) const PRUNE_LOCK: i64 = 0x6f72_6465_7273_2d70;

/// Deletes what is past `retention`, unless another replica is doing it right now.
pub(super) async fn prune(pool: &Pool, retention: Retention) -> Result<(), Error> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(into_error)?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
        .await
        .map_err(into_error)?
        .get(0);
    if !locked {
        tracing::debug!("another replica is pruning; skipped");
        return tx.commit().await.map_err(into_error);
    }
    let now = UnixMicros::now();
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let event_cutoff = now.minus_micros(micros(retention.events));
    // Every event up to the head is committed (sequences are given out in commit order), so
    // nothing not yet visible can fall at or below `through`.
    let through: Option<i64> = tx
        .query_one(
            "SELECT max(sequence) FROM order_events
             WHERE event_time < $1
               AND sequence NOT IN (SELECT max(sequence) FROM order_events GROUP BY order_id)",
            &[&event_cutoff.0],
        )
        .await
        .map_err(into_error)?
        .get(0);
    if let Some(through) = through {
        let deleted = tx
            .execute(
                "DELETE FROM order_events
                 WHERE sequence <= $1
                   AND sequence NOT IN (SELECT max(sequence) FROM order_events GROUP BY order_id)",
                &[&through],
            )
            .await
            .map_err(into_error)?;
        tx.execute(
            "UPDATE store_meta SET value = greatest(value, $1)
             WHERE name = 'events_pruned_through'",
            &[&through],
        )
        .await
        .map_err(into_error)?;
        tracing::info!(deleted, through, "pruned old events");
    }
    let key_cutoff = now.minus_micros(micros(retention.idempotency_keys));
    let deleted_keys = tx
        .execute(
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            &[&key_cutoff.0],
        )
        .await
        .map_err(into_error)?;
    if deleted_keys > 0 {
        tracing::info!(deleted = deleted_keys, "pruned old idempotency keys");
    }
    tx.execute(
        "DELETE FROM webhook_deliveries WHERE attempt_time < $1",
        &[&event_cutoff.0],
    )
    .await
    .map_err(into_error)?;
    tx.execute(
        "DELETE FROM webhook_idempotency_keys WHERE created_at < $1",
        &[&key_cutoff.0],
    )
    .await
    .map_err(into_error)?;
    tx.commit().await.map_err(into_error)
}
