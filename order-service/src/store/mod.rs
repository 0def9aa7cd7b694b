//! Persistence of orders, their event log and idempotency records behind one trait — the event
//! log's contract — so the service does not care which database it runs on: SQLite (embedded,
//! one process) is the default, PostgreSQL serves any number of replicas on one database. What a
//! backend must guarantee is written on [`OrderStore`]; the write decisions it applies are the
//! domain's ([`crate::domain::decide`]), the layout of stored orders is [`record`]'s, and the
//! watch seam built on top is [`EventWatch`]'s, so a backend only reads and writes rows, and
//! proves itself by passing the same conformance tests.

mod instrumented;
mod live;
mod postgres;
pub mod record;
mod sqlite;
mod watch;
pub mod webhooks;

pub use instrumented::InstrumentedStore;
pub use live::{Live, LiveEvent, LiveEvents, LiveReceiver};
pub use postgres::{PostgresSettings, PostgresStore};
pub use sqlite::{DEFAULT_WAL_LIMIT_BYTES, SqliteStore, WalOptions};
pub use watch::EventWatch;
pub use webhooks::WebhookStore;

use crate::domain::{Error, ListQuery, Order, OrderEvent, OrderId, Page, Write, WriteOutcome};
use std::time::{Duration, Instant};

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

/// The system of record for orders: what every backend guarantees, however many processes
/// share it.
///
/// - **Atomic writes.** A write's change, its event and its idempotency record commit in one
///   transaction, or none of them does. An acknowledged write is durable.
/// - **The write decisions are the domain's.** Inside its transaction a backend reads the
///   idempotency record and the order, calls [`crate::domain::replay`] /
///   [`crate::domain::decide`], and persists the result; an update applies only to the row at
///   the version it read, and one that matched no row is [`crate::domain::concurrent_change`]
///   (`VERSION_MISMATCH`), never a silent overwrite.
/// - **Concurrent duplicates.** Writes with the same principal and key that race (in this
///   process or another) make one effect: every caller gets the first call's response, or
///   [`Error::RequestInProgress`] if the first has not committed within its wait, which a retry
///   resolves. A different request under a used key is [`Error::IdempotencyKeyReused`].
/// - **One event order, gap-free in commit order.** Sequences are positive, strictly increasing
///   in commit order, and have no holes: a reader that has seen N has every event ≤ N that was
///   not pruned. (A sequence handed out before commit is not enough: a later number can commit
///   first.)
/// - **Live events.** [`OrderStore::subscribe`] delivers every event committed after the
///   subscription, by any process sharing the database, in sequence order with no gap, each after
///   its commit; a subscriber that falls more than the live buffer behind is told (lagged) rather
///   than slowing writers.
/// - **Reads are current.** A read issued after a write was acknowledged (by any process) sees
///   it; a cache may answer only what it can prove current.
/// - **Retention.** Pruning keeps every order's latest event and records the highest sequence it
///   deleted ([`LogBounds::complete_after`]); it runs once however many processes share the
///   database.
#[async_trait::async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Applies one change with its event and idempotency record in one transaction. Work not
    /// started by `deadline` is abandoned with [`Error::DeadlineExceeded`] and changes nothing;
    /// work started is finished (committed or rolled back whole) even if the caller goes away.
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

    /// Events committed from now on (by any process sharing the store), in sequence order, with
    /// no silent gap: a hole that pruning made before this process could publish it is announced
    /// as [`Live::Pruned`]. Used through [`EventWatch`], which joins it to the stored events.
    fn subscribe(&self) -> LiveReceiver;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), Error>;

    /// Removes records older than the retention.
    async fn prune(&self) -> Result<(), Error>;
}
