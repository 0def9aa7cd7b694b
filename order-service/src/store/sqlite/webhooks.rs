//! [`WebhookStore`] on SQLite: writes run as work on the single writer thread (its connection is
//! the only one that writes), reads on the reader pool. One process uses the file, so it holds
//! every endpoint's lease: claiming returns every enabled endpoint.

use super::SqliteStore;
use super::rows::into_error;
use super::writer::Command;
use crate::domain::{Error, UnixMicros};
use crate::store::webhooks::{
    AttemptRecord, CreateKey, DeliveryRow, EndpointRow, EndpointUpdate, NewEndpoint, WebhookStore,
    decode_event_types, encode_event_types,
};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use std::time::Duration;
use tokio::sync::oneshot;

/// Columns of `webhook_endpoints` in the order [`endpoint_from_row`] reads them.
const ENDPOINT_COLUMNS: &str = "endpoint_id, url, enabled, event_types, description, \
     disabled_reason, cursor, create_time, update_time, secret, previous_secret, \
     previous_secret_until, failed_attempts, next_attempt, seq";

/// Columns of `webhook_deliveries` in the order [`delivery_from_row`] reads them.
const DELIVERY_COLUMNS: &str = "id, webhook_id, sequence, attempt, attempt_time, http_status, \
     error, latency_micros, next_attempt, delivered";

fn endpoint_from_row(row: &Row<'_>) -> rusqlite::Result<(EndpointRow, String)> {
    let previous: Option<String> = row.get(10)?;
    let previous_until: Option<i64> = row.get(11)?;
    Ok((
        EndpointRow {
            id: row.get(0)?,
            url: row.get(1)?,
            enabled: row.get(2)?,
            event_types: Vec::new(),
            description: row.get(4)?,
            disabled_reason: row.get(5)?,
            cursor: row.get::<_, i64>(6)? as u64,
            create_time: UnixMicros(row.get(7)?),
            update_time: UnixMicros(row.get(8)?),
            secret: row.get(9)?,
            previous_secret: previous.zip(previous_until.map(UnixMicros)),
            failed_attempts: row.get::<_, i64>(12)? as u32,
            next_attempt: row.get::<_, Option<i64>>(13)?.map(UnixMicros),
            seq: row.get(14)?,
        },
        row.get(3)?,
    ))
}

fn finish((mut endpoint, types): (EndpointRow, String)) -> Result<EndpointRow, Error> {
    endpoint.event_types = decode_event_types(&types)?;
    Ok(endpoint)
}

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: row.get(0)?,
        webhook_id: row.get(1)?,
        sequence: row.get::<_, i64>(2)? as u64,
        attempt: row.get::<_, i64>(3)? as u32,
        attempt_time: UnixMicros(row.get(4)?),
        http_status: row.get(5)?,
        error: row.get(6)?,
        latency: Duration::from_micros(row.get::<_, i64>(7)?.max(0) as u64),
        next_attempt: row.get::<_, Option<i64>>(8)?.map(UnixMicros),
        delivered: row.get(9)?,
    })
}

fn find(conn: &Connection, id: &str) -> Result<Option<EndpointRow>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = ?1"
    ))
    .and_then(|mut statement| {
        statement
            .query_row(params![id], endpoint_from_row)
            .optional()
    })
    .map_err(into_error)?
    .map(finish)
    .transpose()
}

fn get(conn: &Connection, id: &str) -> Result<EndpointRow, Error> {
    find(conn, id)?.ok_or_else(|| Error::EndpointNotFound(id.to_owned()))
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Runs `work` in an IMMEDIATE transaction on the writer thread's connection.
    async fn in_writer<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Run(Box::new(move |conn: &mut Connection| {
            let result = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(into_error)
                .and_then(|tx| {
                    let value = work(&tx)?;
                    tx.commit().map_err(into_error)?;
                    Ok(value)
                });
            let _ = reply.send(result);
        })))
        .await?;
        // Waited for on a blocking thread, like the readers' work: the runtime counts the work
        // as in progress (a paused test clock does not jump ahead while the writer commits).
        tokio::task::spawn_blocking(move || answer.blocking_recv())
            .await
            .map_err(Error::internal)?
            .map_err(|_| Error::Unavailable("the SQLite writer has stopped".into()))?
    }
}

#[async_trait::async_trait]
impl WebhookStore for SqliteStore {
    async fn create_endpoint(
        &self,
        key: Option<CreateKey>,
        endpoint: NewEndpoint,
    ) -> Result<(EndpointRow, bool), Error> {
        self.in_writer(move |tx| {
            if let Some(key) = &key {
                let stored: Option<(Vec<u8>, String)> = tx
                    .query_row(
                        "SELECT fingerprint, endpoint_id FROM webhook_idempotency_keys
                         WHERE principal = ?1 AND request_id = ?2",
                        params![key.principal.as_str(), key.request_id.as_str()],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(into_error)?;
                if let Some((fingerprint, id)) = stored {
                    if fingerprint != key.fingerprint.0 {
                        return Err(Error::IdempotencyKeyReused);
                    }
                    return Ok((get(tx, &id)?, true));
                }
            }
            tx.execute(
                "INSERT INTO webhook_endpoints (endpoint_id, url, enabled, event_types,
                     description, cursor, create_time, update_time, secret)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?6, ?7)",
                params![
                    endpoint.id,
                    endpoint.url,
                    encode_event_types(&endpoint.event_types),
                    endpoint.description,
                    endpoint.cursor as i64,
                    endpoint.now.0,
                    endpoint.secret,
                ],
            )
            .map_err(into_error)?;
            if let Some(key) = &key {
                tx.execute(
                    "INSERT INTO webhook_idempotency_keys
                         (principal, request_id, fingerprint, endpoint_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        key.principal.as_str(),
                        key.request_id.as_str(),
                        &key.fingerprint.0[..],
                        endpoint.id,
                        endpoint.now.0
                    ],
                )
                .map_err(into_error)?;
            }
            Ok((get(tx, &endpoint.id)?, false))
        })
        .await
    }

    async fn endpoint(&self, id: &str) -> Result<EndpointRow, Error> {
        let id = id.to_owned();
        self.readers.read(move |conn| get(conn, &id)).await
    }

    async fn endpoints(&self, after: i64, limit: usize) -> Result<Vec<EndpointRow>, Error> {
        self.readers
            .read(move |conn| {
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
                         WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                    ))
                    .map_err(into_error)?;
                let rows = statement
                    .query_map(params![after, limit as i64], endpoint_from_row)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(into_error)?;
                rows.into_iter().map(finish).collect()
            })
            .await
    }

    async fn update_endpoint(
        &self,
        id: &str,
        update: EndpointUpdate,
        now: UnixMicros,
    ) -> Result<EndpointRow, Error> {
        let id = id.to_owned();
        self.in_writer(move |tx| {
            let current = get(tx, &id)?;
            let enabling = update.enabled == Some(true);
            let enabled = update.enabled.unwrap_or(current.enabled);
            tx.execute(
                "UPDATE webhook_endpoints SET url = ?2, enabled = ?3, event_types = ?4,
                     description = ?5, update_time = ?6,
                     disabled_reason = CASE WHEN ?7 OR NOT ?3 AND ?8 THEN '' ELSE disabled_reason END,
                     failed_attempts = CASE WHEN ?7 THEN 0 ELSE failed_attempts END,
                     next_attempt = CASE WHEN ?7 THEN NULL ELSE next_attempt END
                 WHERE endpoint_id = ?1",
                params![
                    id,
                    update.url.unwrap_or(current.url),
                    enabled,
                    encode_event_types(&update.event_types.unwrap_or(current.event_types)),
                    update.description.unwrap_or(current.description),
                    now.0,
                    enabling,
                    update.enabled == Some(false),
                ],
            )
            .map_err(into_error)?;
            get(tx, &id)
        })
        .await
    }

    async fn delete_endpoint(&self, id: &str) -> Result<(), Error> {
        let id = id.to_owned();
        self.in_writer(move |tx| {
            let deleted = tx
                .execute(
                    "DELETE FROM webhook_endpoints WHERE endpoint_id = ?1",
                    params![id],
                )
                .map_err(into_error)?;
            if deleted == 0 {
                return Err(Error::EndpointNotFound(id));
            }
            Ok(())
        })
        .await
    }

    async fn rotate_secret(
        &self,
        id: &str,
        secret: String,
        previous_until: UnixMicros,
        now: UnixMicros,
    ) -> Result<(), Error> {
        let id = id.to_owned();
        self.in_writer(move |tx| {
            let updated = tx
                .execute(
                    "UPDATE webhook_endpoints SET previous_secret = secret,
                         previous_secret_until = ?3, secret = ?2, update_time = ?4
                     WHERE endpoint_id = ?1",
                    params![id, secret, previous_until.0, now.0],
                )
                .map_err(into_error)?;
            if updated == 0 {
                return Err(Error::EndpointNotFound(id));
            }
            Ok(())
        })
        .await
    }

    async fn deliveries(
        &self,
        id: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, Error> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| {
                get(conn, &id)?;
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                         WHERE endpoint_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
                    ))
                    .map_err(into_error)?;
                statement
                    .query_map(params![id, before, limit as i64], delivery_from_row)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(into_error)
            })
            .await
    }

    async fn set_cursor(
        &self,
        id: &str,
        cursor: u64,
        now: UnixMicros,
    ) -> Result<EndpointRow, Error> {
        let id = id.to_owned();
        self.in_writer(move |tx| {
            let updated = tx
                .execute(
                    "UPDATE webhook_endpoints SET cursor = ?2, failed_attempts = 0,
                         next_attempt = NULL, update_time = ?3
                     WHERE endpoint_id = ?1",
                    params![id, cursor as i64, now.0],
                )
                .map_err(into_error)?;
            if updated == 0 {
                return Err(Error::EndpointNotFound(id));
            }
            get(tx, &id)
        })
        .await
    }

    async fn skip_through(
        &self,
        id: &str,
        _owner: &str,
        expected: u64,
        through: u64,
    ) -> Result<bool, Error> {
        let id = id.to_owned();
        self.in_writer(move |tx| {
            let updated = tx
                .execute(
                    "UPDATE webhook_endpoints SET cursor = ?3, failed_attempts = 0,
                         next_attempt = NULL
                     WHERE endpoint_id = ?1 AND cursor = ?2",
                    params![id, expected as i64, through as i64],
                )
                .map_err(into_error)?;
            Ok(updated == 1)
        })
        .await
    }

    async fn record_attempt(&self, _owner: &str, record: AttemptRecord) -> Result<bool, Error> {
        self.in_writer(move |tx| {
            let delivery = &record.delivery;
            let updated = tx
                .execute(
                    "UPDATE webhook_endpoints SET
                         cursor = CASE WHEN ?3 THEN ?4 ELSE cursor END,
                         failed_attempts = CASE WHEN ?3 THEN 0 ELSE ?5 END,
                         next_attempt = ?6,
                         enabled = CASE WHEN ?7 IS NULL THEN enabled ELSE 0 END,
                         disabled_reason = coalesce(?7, disabled_reason),
                         update_time = CASE WHEN ?7 IS NULL THEN update_time ELSE ?8 END
                     WHERE endpoint_id = ?1 AND cursor = ?2 AND enabled",
                    params![
                        record.endpoint_id,
                        record.expected_cursor as i64,
                        delivery.delivered,
                        delivery.sequence as i64,
                        delivery.attempt,
                        delivery.next_attempt.map(|t| t.0),
                        record.disable,
                        delivery.attempt_time.0,
                    ],
                )
                .map_err(into_error)?;
            if updated == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO webhook_deliveries (endpoint_id, webhook_id, sequence, attempt,
                     attempt_time, http_status, error, latency_micros, next_attempt, delivered)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    record.endpoint_id,
                    delivery.webhook_id,
                    delivery.sequence as i64,
                    delivery.attempt,
                    delivery.attempt_time.0,
                    delivery.http_status,
                    delivery.error,
                    micros(delivery.latency),
                    delivery.next_attempt.map(|t| t.0),
                    delivery.delivered,
                ],
            )
            .map_err(into_error)?;
            Ok(true)
        })
        .await
    }

    async fn claim_endpoints(
        &self,
        _owner: &str,
        _lease: Duration,
    ) -> Result<Vec<EndpointRow>, Error> {
        self.readers
            .read(move |conn| {
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
                         WHERE enabled ORDER BY seq"
                    ))
                    .map_err(into_error)?;
                let rows = statement
                    .query_map([], endpoint_from_row)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(into_error)?;
                rows.into_iter().map(finish).collect()
            })
            .await
    }
}
