//! [`WebhookStore`] on PostgreSQL, shared by every replica. Each endpoint is delivered by one
//! replica at a time: [`WebhookStore::claim_endpoints`] takes endpoints nobody holds or whose
//! lease expired (by the database's clock, so replicas' clocks do not matter) and renews the
//! caller's own with one conditional UPDATE; moving an endpoint's cursor requires holding its
//! lease, in the same statement that logs the attempt. Every operation is one statement (so
//! atomic) except the idempotent creation, whose transaction runs in a task of its own, which a
//! caller going away cannot cut short.

use super::rows::{into_error, pool_error};
use super::{PostgresStore, query};
use crate::domain::{Error, UnixMicros};
use crate::store::webhooks::{
    AttemptRecord, CreateKey, DeliveryRow, EndpointRow, EndpointUpdate, NewEndpoint, WebhookStore,
    decode_event_types, encode_event_types,
};
use std::time::Duration;
use tokio_postgres::Row;

/// Columns of `webhook_endpoints` in the order [`endpoint_from_row`] reads them.
const ENDPOINT_COLUMNS: &str = "endpoint_id, url, enabled, event_types, description, \
     disabled_reason, cursor, create_time, update_time, secret, previous_secret, \
     previous_secret_until, failed_attempts, next_attempt, seq";

/// Columns of `webhook_deliveries` in the order [`delivery_from_row`] reads them.
const DELIVERY_COLUMNS: &str = "id, webhook_id, sequence, attempt, attempt_time, http_status, \
     error, latency_micros, next_attempt, delivered";

fn endpoint_from_row(row: &Row) -> Result<EndpointRow, Error> {
    let get = |e: tokio_postgres::Error| Error::internal(e);
    let previous: Option<String> = row.try_get(10).map_err(get)?;
    let previous_until: Option<i64> = row.try_get(11).map_err(get)?;
    Ok(EndpointRow {
        id: row.try_get(0).map_err(get)?,
        url: row.try_get(1).map_err(get)?,
        enabled: row.try_get(2).map_err(get)?,
        event_types: decode_event_types(&row.try_get::<_, String>(3).map_err(get)?)?,
        description: row.try_get(4).map_err(get)?,
        disabled_reason: row.try_get(5).map_err(get)?,
        cursor: row.try_get::<_, i64>(6).map_err(get)?.max(0) as u64,
        create_time: UnixMicros(row.try_get(7).map_err(get)?),
        update_time: UnixMicros(row.try_get(8).map_err(get)?),
        secret: row.try_get(9).map_err(get)?,
        previous_secret: previous.zip(previous_until.map(UnixMicros)),
        failed_attempts: row.try_get::<_, i32>(12).map_err(get)?.max(0) as u32,
        next_attempt: row
            .try_get::<_, Option<i64>>(13)
            .map_err(get)?
            .map(UnixMicros),
        seq: row.try_get(14).map_err(get)?,
    })
}

fn delivery_from_row(row: &Row) -> Result<DeliveryRow, Error> {
    let get = |e: tokio_postgres::Error| Error::internal(e);
    Ok(DeliveryRow {
        id: row.try_get(0).map_err(get)?,
        webhook_id: row.try_get(1).map_err(get)?,
        sequence: row.try_get::<_, i64>(2).map_err(get)?.max(0) as u64,
        attempt: row.try_get::<_, i32>(3).map_err(get)?.max(0) as u32,
        attempt_time: UnixMicros(row.try_get(4).map_err(get)?),
        http_status: row.try_get(5).map_err(get)?,
        error: row.try_get(6).map_err(get)?,
        latency: Duration::from_micros(row.try_get::<_, i64>(7).map_err(get)?.max(0) as u64),
        next_attempt: row
            .try_get::<_, Option<i64>>(8)
            .map_err(get)?
            .map(UnixMicros),
        delivered: row.try_get(9).map_err(get)?,
    })
}

fn one(rows: Vec<Row>, id: &str) -> Result<EndpointRow, Error> {
    rows.first()
        .map(endpoint_from_row)
        .unwrap_or_else(|| Err(Error::EndpointNotFound(id.to_owned())))
}

#[async_trait::async_trait]
impl WebhookStore for PostgresStore {
    async fn create_endpoint(
        &self,
        key: Option<CreateKey>,
        endpoint: NewEndpoint,
    ) -> Result<(EndpointRow, bool), Error> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(into_error)?;
            if let Some(key) = &key {
                let claimed = tx
                    .execute(
                        "INSERT INTO webhook_idempotency_keys
                             (principal, request_id, fingerprint, endpoint_id, created_at)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        &[
                            &key.principal.as_str(),
                            &key.request_id.as_str(),
                            &&key.fingerprint.0[..],
                            &endpoint.id,
                            &endpoint.now.0,
                        ],
                    )
                    .await
                    .map_err(into_error)?;
                if claimed == 0 {
                    let row = tx
                        .query_one(
                            "SELECT fingerprint, endpoint_id FROM webhook_idempotency_keys
                             WHERE principal = $1 AND request_id = $2",
                            &[&key.principal.as_str(), &key.request_id.as_str()],
                        )
                        .await
                        .map_err(into_error)?;
                    let fingerprint: Vec<u8> = row.get(0);
                    let id: String = row.get(1);
                    if fingerprint != key.fingerprint.0 {
                        return Err(Error::IdempotencyKeyReused);
                    }
                    let rows = tx
                        .query(
                            &format!(
                                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
                                 WHERE endpoint_id = $1"
                            ),
                            &[&id],
                        )
                        .await
                        .map_err(into_error)?;
                    let found = one(rows, &id)?;
                    tx.commit().await.map_err(into_error)?;
                    return Ok((found, true));
                }
            }
            let rows = tx
                .query(
                    &format!(
                        "INSERT INTO webhook_endpoints (endpoint_id, url, enabled, event_types,
                             description, cursor, create_time, update_time, secret)
                         VALUES ($1, $2, true, $3, $4, $5, $6, $6, $7)
                         RETURNING {ENDPOINT_COLUMNS}"
                    ),
                    &[
                        &endpoint.id,
                        &endpoint.url,
                        &encode_event_types(&endpoint.event_types),
                        &endpoint.description,
                        &(endpoint.cursor as i64),
                        &endpoint.now.0,
                        &endpoint.secret,
                    ],
                )
                .await
                .map_err(into_error)?;
            let created = one(rows, &endpoint.id)?;
            tx.commit().await.map_err(into_error)?;
            Ok((created, false))
        })
        .await
        .map_err(Error::internal)?
    }

    async fn endpoint(&self, id: &str) -> Result<EndpointRow, Error> {
        let rows = query(
            &self.pool,
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = $1"),
            &[&id],
        )
        .await?;
        one(rows, id)
    }

    async fn endpoints(&self, after: i64, limit: usize) -> Result<Vec<EndpointRow>, Error> {
        query(
            &self.pool,
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
                 WHERE seq > $1 ORDER BY seq LIMIT $2"
            ),
            &[&after, &(limit as i64)],
        )
        .await?
        .iter()
        .map(endpoint_from_row)
        .collect()
    }

    async fn update_endpoint(
        &self,
        id: &str,
        update: EndpointUpdate,
        now: UnixMicros,
    ) -> Result<EndpointRow, Error> {
        let enabling = update.enabled == Some(true);
        let disabling = update.enabled == Some(false);
        let types = update.event_types.as_deref().map(encode_event_types);
        let rows = query(
            &self.pool,
            &format!(
                "UPDATE webhook_endpoints SET
                     url = coalesce($2, url),
                     enabled = coalesce($3, enabled),
                     event_types = coalesce($4, event_types),
                     description = coalesce($5, description),
                     update_time = $6,
                     disabled_reason = CASE WHEN $7 OR $8 THEN '' ELSE disabled_reason END,
                     failed_attempts = CASE WHEN $7 THEN 0 ELSE failed_attempts END,
                     next_attempt = CASE WHEN $7 THEN NULL ELSE next_attempt END
                 WHERE endpoint_id = $1
                 RETURNING {ENDPOINT_COLUMNS}"
            ),
            &[
                &id,
                &update.url,
                &update.enabled,
                &types,
                &update.description,
                &now.0,
                &enabling,
                &disabling,
            ],
        )
        .await?;
        one(rows, id)
    }

    async fn delete_endpoint(&self, id: &str) -> Result<(), Error> {
        let rows = query(
            &self.pool,
            "DELETE FROM webhook_endpoints WHERE endpoint_id = $1 RETURNING endpoint_id",
            &[&id],
        )
        .await?;
        if rows.is_empty() {
            return Err(Error::EndpointNotFound(id.to_owned()));
        }
        Ok(())
    }

    async fn rotate_secret(
        &self,
        id: &str,
        secret: String,
        previous_until: UnixMicros,
        now: UnixMicros,
    ) -> Result<(), Error> {
        let rows = query(
            &self.pool,
            "UPDATE webhook_endpoints SET previous_secret = secret,
                 previous_secret_until = $3, secret = $2, update_time = $4
             WHERE endpoint_id = $1 RETURNING endpoint_id",
            &[&id, &secret, &previous_until.0, &now.0],
        )
        .await?;
        if rows.is_empty() {
            return Err(Error::EndpointNotFound(id.to_owned()));
        }
        Ok(())
    }

    async fn deliveries(
        &self,
        id: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, Error> {
        self.endpoint(id).await?;
        query(
            &self.pool,
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                 WHERE endpoint_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            ),
            &[&id, &before, &(limit as i64)],
        )
        .await?
        .iter()
        .map(delivery_from_row)
        .collect()
    }

    async fn set_cursor(
        &self,
        id: &str,
        cursor: u64,
        now: UnixMicros,
    ) -> Result<EndpointRow, Error> {
        let rows = query(
            &self.pool,
            &format!(
                "UPDATE webhook_endpoints SET cursor = $2, failed_attempts = 0,
                     next_attempt = NULL, update_time = $3
                 WHERE endpoint_id = $1
                 RETURNING {ENDPOINT_COLUMNS}"
            ),
            &[&id, &(cursor as i64), &now.0],
        )
        .await?;
        one(rows, id)
    }

    async fn skip_through(
        &self,
        id: &str,
        owner: &str,
        expected: u64,
        through: u64,
    ) -> Result<bool, Error> {
        let rows = query(
            &self.pool,
            "UPDATE webhook_endpoints SET cursor = $4, failed_attempts = 0, next_attempt = NULL
             WHERE endpoint_id = $1 AND lease_owner = $2 AND cursor = $3
             RETURNING endpoint_id",
            &[&id, &owner, &(expected as i64), &(through as i64)],
        )
        .await?;
        Ok(!rows.is_empty())
    }

    async fn record_attempt(&self, owner: &str, record: AttemptRecord) -> Result<bool, Error> {
        let delivery = &record.delivery;
        let latency = i64::try_from(delivery.latency.as_micros()).unwrap_or(i64::MAX);
        let attempt = delivery.attempt as i32;
        // One statement: the endpoint moves only if the caller still holds its lease and the
        // cursor is where the attempt started; the attempt is logged only if it moved.
        let rows = query(
            &self.pool,
            "WITH moved AS (
                 UPDATE webhook_endpoints SET
                     cursor = CASE WHEN $4 THEN $5 ELSE cursor END,
                     failed_attempts = CASE WHEN $4 THEN 0 ELSE $6 END,
                     next_attempt = $7,
                     enabled = CASE WHEN $8::text IS NULL THEN enabled ELSE false END,
                     disabled_reason = coalesce($8, disabled_reason),
                     update_time = CASE WHEN $8::text IS NULL THEN update_time ELSE $9 END
                 WHERE endpoint_id = $1 AND lease_owner = $2 AND cursor = $3 AND enabled
                 RETURNING endpoint_id
             )
             INSERT INTO webhook_deliveries (endpoint_id, webhook_id, sequence, attempt,
                 attempt_time, http_status, error, latency_micros, next_attempt, delivered)
             SELECT endpoint_id, $10, $5, $6, $9, $11, $12, $13, $7, $4 FROM moved
             RETURNING id",
            &[
                &record.endpoint_id,
                &owner,
                &(record.expected_cursor as i64),
                &delivery.delivered,
                &(delivery.sequence as i64),
                &attempt,
                &delivery.next_attempt.map(|t| t.0),
                &record.disable,
                &delivery.attempt_time.0,
                &delivery.webhook_id,
                &delivery.http_status,
                &delivery.error,
                &latency,
            ],
        )
        .await?;
        Ok(!rows.is_empty())
    }

    async fn claim_endpoints(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<EndpointRow>, Error> {
        query(
            &self.pool,
            &format!(
                "UPDATE webhook_endpoints SET lease_owner = $1,
                     lease_expires = now() + make_interval(secs => $2)
                 WHERE enabled
                   AND (lease_owner IS NULL OR lease_owner = $1 OR lease_expires < now())
                 RETURNING {ENDPOINT_COLUMNS}"
            ),
            &[&owner, &lease.as_secs_f64()],
        )
        .await?
        .iter()
        .map(endpoint_from_row)
        .collect()
    }
}
