//! Persistence of orders, their event log and idempotency records behind one trait, so the
//! service does not care which database it runs on: SQLite (embedded, one process) is the
//! default, PostgreSQL serves several replicas on one database. Every write is one
//! self-contained transaction, live events are published after commit in sequence order, and
//! nothing database-specific crosses this boundary.

mod instrumented;
mod live;
mod postgres;
pub mod record;
mod sqlite;

pub use instrumented::InstrumentedStore;
pub use live::LiveEvents;
pub use postgres::{PostgresSettings, PostgresStore};
pub use sqlite::{DEFAULT_WAL_LIMIT_BYTES, SqliteStore, WalOptions};

use crate::domain::{Error, ListQuery, Order, OrderEvent, OrderId, Page, Write, WriteOutcome};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How long records are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events older than this may be pruned (an order's latest event is always kept).
    pub events: Duration,
    /// Idempotency keys older than this may be pruned; the contract asks for at least 24 h.
    pub idempotency_keys: Duration,
}

/// How a store is run.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// How long records are kept.
    pub retention: Retention,
    /// Live events kept for the slowest watcher before it is cut off (RESOURCE_EXHAUSTED).
    pub live_buffer: usize,
}

/// Which part of the event log is still stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Every event with a greater sequence is stored; resuming from below this is impossible.
    pub complete_after: u64,
    /// The greatest sequence assigned so far (0 when the log is empty).
    pub latest: u64,
}

/// The system of record for orders.
#[async_trait::async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Applies one change with its event and idempotency record in one transaction. Work not
    /// started by `deadline` is abandoned with [`Error::DeadlineExceeded`] and changes nothing.
    async fn write(&self, write: Write, deadline: Option<Instant>) -> Result<WriteOutcome, Error>;

    /// One order by id.
    async fn order(&self, id: &OrderId) -> Result<Order, Error>;

    /// One page of orders, oldest first.
    async fn list(&self, query: &ListQuery) -> Result<Page, Error>;

    /// Up to `limit` stored events with a sequence greater than `after`, in order, optionally
    /// only those of one order. `EventsExpired` when pruning has deleted events after `after`
    /// (checked in the same snapshot as the page is read from): never a page with a gap.
    async fn events_after(
        &self,
        after: u64,
        order: Option<&OrderId>,
        limit: usize,
    ) -> Result<Vec<OrderEvent>, Error>;

    /// The latest stored event of one order (its current state), if the order exists.
    async fn latest_event(&self, order: &OrderId) -> Result<Option<OrderEvent>, Error>;

    /// Which sequences can still be replayed.
    async fn log_bounds(&self) -> Result<LogBounds, Error>;

    /// Events committed from now on, in sequence order.
    fn subscribe(&self) -> broadcast::Receiver<Arc<OrderEvent>>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), Error>;

    /// Removes records older than the retention.
    async fn prune(&self) -> Result<(), Error>;
}
