//! The PostgreSQL store: any number of order-service replicas on one database, with one global
//! event order that is gap-free in commit order (see [`writer`]), live events across replicas
//! (see [`tailer`]) and pruning that runs once across the cluster.
//!
//! The driver is tokio-postgres with deadpool-postgres's pool: queries are pipelined on one
//! connection and run on the caller's task (no thread hop per step, unlike a blocking driver
//! behind a thread pool). sqlx was not chosen: it returned a cancelled `begin()`'s open
//! transaction to its pool, and this service drops handler futures at their deadline. Here no
//! caller holds a pooled connection inside a transaction at all: reads are single statements
//! (one snapshot each), and transactions run only in the writer tasks and in spawned prune
//! tasks, which a caller cannot cancel half-way.
//!
//! There is no order cache: another replica may have changed an order at any time, and nothing
//! here could prove a cached copy current, so every read goes to the database.

mod connect;
mod prune;
mod rows;
mod schema;
mod tailer;
mod webhooks;
mod writer;

pub use self::connect::PostgresSettings;

use self::connect::Tls;
use self::rows::{
    EVENT_COLUMNS, ORDER_COLUMNS, event_from_row, into_error, is_connection_loss, order_from_row,
    pool_error,
};
use self::writer::Job;
use super::{LiveEvents, LiveReceiver, LogBounds, OrderStore, Retention, StoreOptions};
use crate::domain::{
    Error, ListQuery, Order, OrderEvent, OrderId, OrderStatus, Page, Write, WriteOutcome,
};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Writes waiting for a writer task before callers are made to wait.
const WRITE_QUEUE: usize = 4096;
/// How long the health check waits for the database's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Orders in a PostgreSQL database shared by every replica.
pub struct PostgresStore {
    /// The writer tasks' queue; they stop once it is dropped and drained.
    jobs: mpsc::Sender<Job>,
    pool: Pool,
    live: LiveEvents,
    retention: Retention,
    /// Stops the tailer and its LISTEN connection when the store is dropped.
    _stop: DropGuard,
}

impl PostgresStore {
    /// Connects, migrates the schema (waiting for a replica doing the same) and starts the
    /// writers and the tailer. Fails when the database cannot be reached.
    pub async fn open(settings: PostgresSettings, options: StoreOptions) -> Result<Self, Error> {
        let tls = Tls::for_settings(&settings)?;
        let pool = connect::pool(&settings, &tls)?;
        schema::migrate(&pool).await?;
        let head = query(&pool, "SELECT last FROM event_log_head", &[]).await?;
        let published: i64 = head
            .first()
            .ok_or_else(|| Error::internal("event_log_head has no row"))?
            .get(0);
        let live = LiveEvents::new(options.live_buffer);
        let stop = CancellationToken::new();
        let committed = Arc::new(Notify::new());
        tailer::start(
            pool.clone(),
            settings.clone(),
            tls,
            live.clone(),
            Arc::clone(&committed),
            published as u64,
            stop.clone(),
        );
        let (jobs, queue) = mpsc::channel(WRITE_QUEUE);
        writer::start(pool.clone(), queue, committed);
        tracing::info!(
            server = %settings.describe(),
            pool_size = settings.pool_size,
            last_sequence = published,
            "PostgreSQL store open"
        );
        Ok(PostgresStore {
            jobs,
            pool,
            live,
            retention: options.retention,
            _stop: stop.drop_guard(),
        })
    }
}

/// Runs one statement on a pooled connection. A connection the server closed while it sat in
/// the pool (a restart, a killed backend) fails its first statement; the pool drops it, and the
/// statement is run once more on another. Only for reads: one statement, no transaction.
async fn query(
    pool: &Pool,
    statement: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Error> {
    let mut retried = false;
    loop {
        let client = pool.get().await.map_err(pool_error)?;
        let result = match client.prepare_cached(statement).await {
            Ok(prepared) => client.query(&prepared, params).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(rows) => return Ok(rows),
            Err(error) if !retried && is_connection_loss(&error) => {
                tracing::debug!(
                    error = %crate::error_chain::DisplayChain(&error),
                    "a pooled PostgreSQL connection was closed; trying another"
                );
                retried = true;
            }
            Err(error) => return Err(into_error(error)),
        }
    }
}

#[async_trait::async_trait]
impl OrderStore for PostgresStore {
    async fn write(&self, write: Write, deadline: Option<Instant>) -> Result<WriteOutcome, Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                write,
                deadline,
                reply,
            })
            .await
            .map_err(|_| Error::Unavailable("the PostgreSQL writers have stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the PostgreSQL writers have stopped".into()))?
    }

    async fn order(&self, id: &OrderId) -> Result<Order, Error> {
        let rows = query(
            &self.pool,
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"),
            &[&id.as_str()],
        )
        .await?;
        match rows.first() {
            Some(row) => order_from_row(row, 0),
            None => Err(Error::NotFound(id.clone())),
        }
    }

    async fn list(&self, query_: &ListQuery) -> Result<Page, Error> {
        let limit = i64::from(query_.page_size) + 1;
        let rows = query(
            &self.pool,
            &format!(
                "SELECT seq, {ORDER_COLUMNS} FROM orders
                 WHERE seq > $1
                   AND ($2::integer IS NULL OR status = $2)
                   AND ($3::text IS NULL OR customer_id = $3)
                 ORDER BY seq LIMIT $4"
            ),
            &[
                &query_.after,
                &query_.status.map(OrderStatus::number),
                &query_.customer_id.as_ref().map(|c| c.as_str()),
                &limit,
            ],
        )
        .await?;
        let more = rows.len() > query_.page_size as usize;
        let mut orders = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in rows.iter().take(query_.page_size as usize) {
            last_seq = Some(row.get::<_, i64>(0));
            orders.push(order_from_row(row, 1)?);
        }
        Ok(Page {
            orders,
            next_after: if more { last_seq } else { None },
        })
    }

    async fn events_after(
        &self,
        after: u64,
        order: Option<&OrderId>,
        limit: usize,
    ) -> Result<Vec<OrderEvent>, Error> {
        // One statement, so the pruned mark and the page come from the same snapshot: a prune
        // that removed events after `after` is seen here, never a page with a silent gap. The
        // mark's row always exists, so there is always one row (with no event when none).
        let rows = query(
            &self.pool,
            &format!(
                "SELECT meta.value, page.* FROM store_meta meta
                 LEFT JOIN LATERAL (
                     SELECT {EVENT_COLUMNS} FROM order_events
                     WHERE sequence > $1 AND ($2::text IS NULL OR order_id = $2)
                     ORDER BY sequence LIMIT $3
                 ) page ON true
                 WHERE meta.name = 'events_pruned_through'
                 ORDER BY page.sequence"
            ),
            &[
                &i64::try_from(after).unwrap_or(i64::MAX),
                &order.map(OrderId::as_str),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )
        .await?;
        let first = rows
            .first()
            .ok_or_else(|| Error::internal("store_meta has no events_pruned_through row"))?;
        let complete_after = u64::try_from(first.get::<_, i64>(0)).unwrap_or(0);
        if after < complete_after {
            return Err(Error::EventsExpired {
                requested: after,
                oldest: complete_after + 1,
            });
        }
        rows.iter()
            .filter(|row| row.get::<_, Option<i64>>(1).is_some())
            .map(|row| event_from_row(row, 1))
            .collect()
    }

    async fn latest_event(&self, order: &OrderId) -> Result<Option<OrderEvent>, Error> {
        let rows = query(
            &self.pool,
            &format!(
                "SELECT {EVENT_COLUMNS} FROM order_events
                 WHERE order_id = $1 ORDER BY sequence DESC LIMIT 1"
            ),
            &[&order.as_str()],
        )
        .await?;
        rows.first().map(|row| event_from_row(row, 0)).transpose()
    }

    async fn log_bounds(&self) -> Result<LogBounds, Error> {
        let rows = query(
            &self.pool,
            "SELECT (SELECT last FROM event_log_head),
                    (SELECT value FROM store_meta WHERE name = 'events_pruned_through')",
            &[],
        )
        .await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::internal("the log bounds query returned no row"))?;
        let latest: Option<i64> = row.get(0);
        let complete_after: Option<i64> = row.get(1);
        Ok(LogBounds {
            complete_after: complete_after.unwrap_or(0).max(0) as u64,
            latest: latest.unwrap_or(0).max(0) as u64,
        })
    }

    fn subscribe(&self) -> LiveReceiver {
        self.live.subscribe()
    }

    async fn ping(&self) -> Result<(), Error> {
        if self.jobs.is_closed() {
            return Err(Error::Unavailable(
                "the PostgreSQL writers have stopped".into(),
            ));
        }
        match tokio::time::timeout(PING_TIMEOUT, query(&self.pool, "SELECT 1", &[])).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(Error::Unavailable(
                format!(
                    "PostgreSQL did not answer within {}",
                    humantime::format_duration(PING_TIMEOUT)
                )
                .into(),
            )),
        }
    }

    async fn prune(&self) -> Result<(), Error> {
        // In a task of its own: the caller may stop waiting, the transaction still ends whole.
        let pool = self.pool.clone();
        let retention = self.retention;
        tokio::spawn(async move { prune::prune(&pool, retention).await })
            .await
            .map_err(Error::internal)?
    }
}
