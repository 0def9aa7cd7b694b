//! The embedded SQLite store: one writer thread (group commit), a pool of readers and a cache of
//! recently written orders over one database file in WAL mode, used by one process at a time.

mod apply;
mod cache;
mod checkpointer;
mod files;
mod readers;
mod rows;
mod schema;
mod statements;
mod thread_exit;
mod webhooks;
mod write_health;
mod writer;

use self::cache::OrderCache;
use self::checkpointer::{CheckpointLock, Checkpointer};
use self::files::DatabaseFiles;
use self::readers::ReadPool;
use self::rows::{EVENT_COLUMNS, ORDER_COLUMNS, event_from_row, into_error, order_from_row};
use self::thread_exit::ThreadExit;
use self::write_health::{WriteHealth, unavailable};
use self::writer::{Command, Writer};
use super::{LiveEvents, LiveReceiver, LogBounds, OrderStore, StoreOptions};
use crate::domain::{
    Error, ListQuery, Order, OrderEvent, OrderId, OrderStatus, Page, Write, WriteOutcome,
};
use order_status_telemetry::Metrics;
use rusqlite::{OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for the writer thread before callers are made to wait.
const WRITE_QUEUE: usize = 4096;
/// Read-only connections.
const READERS: usize = 4;
/// Orders kept in memory (about 0.5 KiB each).
const CACHED_ORDERS: usize = 100_000;
/// Newest orders loaded into the cache at start.
const WARM_ORDERS: i64 = 10_000;
/// A writer busy with one piece of work for longer than this is stuck (a frozen or hung
/// filesystem): commits take milliseconds, and callers' deadlines are seconds.
const WRITER_STALL: Duration = Duration::from_secs(2);
/// How long dropping the store waits for the writer to finish queued writes and empty the WAL.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL size past which the writer checkpoints and empties it, unless configured.
pub const DEFAULT_WAL_LIMIT_BYTES: u64 = 16 * 1024 * 1024;

/// How the SQLite write-ahead log is kept in bounds and observed.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Past this size the writer checkpoints the WAL and truncates it to zero between two
    /// batches; SQLite also cuts a WAL it starts over back to this size (`journal_size_limit`).
    pub limit_bytes: u64,
    /// Where the WAL's size is reported (`orders.store.wal.size`), if anywhere.
    pub metrics: Option<Metrics>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            limit_bytes: DEFAULT_WAL_LIMIT_BYTES,
            metrics: None,
        }
    }
}

/// Orders in one SQLite file.
pub struct SqliteStore {
    // Fields are dropped in this order: the queue closes first, so the writer finishes what is
    // queued, empties the WAL and stops while `_writer_exit` waits for it; then the checkpoint
    // thread stops.
    commands: mpsc::Sender<Command>,
    /// Waited on when the store is dropped.
    _writer_exit: ThreadExit,
    /// Checkpoints the WAL while the store is open.
    _checkpointer: Checkpointer,
    /// The files a write must be durable in; checked by the writer and the health check.
    files: Arc<DatabaseFiles>,
    /// How writes are going, as the writer last saw it.
    health: Arc<WriteHealth>,
    readers: Arc<ReadPool>,
    cache: Arc<OrderCache>,
    live: LiveEvents,
    /// Held while the store is open: a second process on the same file would bypass the single
    /// writer and leave the cache stale.
    _exclusive: std::fs::File,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path` and starts its writer,
    /// with the default WAL limit and no metrics.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, Error> {
        SqliteStore::open_with(path, options, WalOptions::default())
    }

    /// Opens (creating and migrating if needed) the database at `path` and starts its writer.
    pub fn open_with(path: &Path, options: StoreOptions, wal: WalOptions) -> Result<Self, Error> {
        let exclusive = lock_exclusively(path)?;
        let conn = schema::open_writer(path, wal.limit_bytes).map_err(|error| {
            Error::Unavailable(
                format!("cannot open SQLite database {}: {error}", path.display()).into(),
            )
        })?;
        // After the writer opened the database in WAL mode, so the WAL file exists.
        let files = Arc::new(DatabaseFiles::capture(path).map_err(|error| {
            Error::Unavailable(
                format!(
                    "cannot identify the SQLite files of {}: {error}",
                    path.display()
                )
                .into(),
            )
        })?);
        let readers = ReadPool::open(path, READERS).map_err(into_error)?;
        let checkpoint_lock = CheckpointLock::default();
        let checkpointer = Checkpointer::start(
            path.to_owned(),
            files.wal_path().to_owned(),
            wal.limit_bytes,
            Arc::clone(&checkpoint_lock),
            wal.metrics,
        )
        .map_err(Error::internal)?;
        let cache = Arc::new(OrderCache::new(CACHED_ORDERS));
        warm(&conn, &cache).map_err(into_error)?;
        let live = LiveEvents::new(options.live_buffer);
        let health = Arc::new(WriteHealth::new());
        let (commands, receiver) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            conn,
            live: live.clone(),
            cache: Arc::clone(&cache),
            retention: options.retention,
            files: Arc::clone(&files),
            health: Arc::clone(&health),
            wal_limit_bytes: wal.limit_bytes,
            checkpoint_lock,
        };
        let (exiting, writer_exit) = ThreadExit::new("sqlite-writer", CLOSE_TIMEOUT);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let _exiting = exiting;
                writer.run(receiver);
            })
            .map_err(Error::internal)?;
        Ok(SqliteStore {
            commands,
            _writer_exit: writer_exit,
            _checkpointer: checkpointer,
            files,
            health,
            readers,
            cache,
            live,
            _exclusive: exclusive,
        })
    }

    /// Checks that writes can succeed: the files are still the ones written, the writer is not
    /// stuck, and, after a failed commit, that a probe write commits now.
    async fn check_writes(&self) -> Result<(), Error> {
        if let Some(lost) = self.health.lost() {
            return Err(unavailable(&lost));
        }
        if let Err(changed) = self.files.check() {
            return Err(unavailable(&self.health.lose(changed)));
        }
        if let Some(busy) = self.health.busy_for().filter(|busy| *busy > WRITER_STALL) {
            return Err(Error::Unavailable(
                format!(
                    "the SQLite writer has been inside one commit for {}: writes are not \
                     completing (a frozen or hung filesystem, or a lock held elsewhere)",
                    humantime::format_duration(Duration::from_millis(busy.as_millis() as u64))
                )
                .into(),
            ));
        }
        if self.health.last_failure().is_some() {
            let (reply, answer) = oneshot::channel();
            self.send(Command::Probe { reply }).await?;
            answer
                .await
                .map_err(|_| Error::Unavailable("the SQLite writer has stopped".into()))??;
        }
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Unavailable("the SQLite writer has stopped".into()))
    }
}

#[async_trait::async_trait]
impl OrderStore for SqliteStore {
    async fn write(&self, write: Write, deadline: Option<Instant>) -> Result<WriteOutcome, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Write {
            write,
            deadline,
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the SQLite writer has stopped".into()))?
    }

    async fn order(&self, id: &OrderId) -> Result<Order, Error> {
        if let Some(order) = self.cache.get(id) {
            return Ok(order);
        }
        let id = id.clone();
        self.readers
            .read(move |conn| rows::select_order(conn, &id))
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, Error> {
        let query = query.clone();
        self.readers
            .read(move |conn| {
                let limit = i64::from(query.page_size) + 1;
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {ORDER_COLUMNS}, seq FROM orders
                         WHERE seq > ?1
                           AND (?2 IS NULL OR status = ?2)
                           AND (?3 IS NULL OR customer_id = ?3)
                         ORDER BY seq LIMIT ?4"
                    ))
                    .map_err(into_error)?;
                let rows = statement
                    .query_map(
                        params![
                            query.after,
                            query.status.map(OrderStatus::number),
                            query.customer_id.as_ref().map(|c| c.as_str()),
                            limit
                        ],
                        |row| {
                            // seq is the column after ORDER_COLUMNS.
                            Ok((row.get::<_, i64>(9)?, order_from_row(row)?))
                        },
                    )
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(into_error)?;
                let more = rows.len() > query.page_size as usize;
                let mut orders = Vec::with_capacity(rows.len());
                let mut last_seq = None;
                for (seq, order) in rows.into_iter().take(query.page_size as usize) {
                    last_seq = Some(seq);
                    orders.push(order);
                }
                Ok(Page {
                    orders,
                    next_after: if more { last_seq } else { None },
                })
            })
            .await
    }

    async fn events_after(
        &self,
        after: u64,
        order: Option<&OrderId>,
        limit: usize,
    ) -> Result<Vec<OrderEvent>, Error> {
        let order = order.cloned();
        self.readers
            .read(move |conn| {
                // One read transaction, so the pruned mark and the page come from the same
                // snapshot: a prune that removed events after `after` is seen here, rather
                // than leaving a silent gap in the page.
                let snapshot = conn.unchecked_transaction().map_err(into_error)?;
                let complete_after = events_pruned_through(&snapshot)?;
                if after < complete_after {
                    return Err(Error::EventsExpired {
                        requested: after,
                        oldest: complete_after + 1,
                    });
                }
                let mut statement = snapshot
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM order_events
                         WHERE sequence > ?1 AND (?2 IS NULL OR order_id = ?2)
                         ORDER BY sequence LIMIT ?3"
                    ))
                    .map_err(into_error)?;
                statement
                    .query_map(
                        params![
                            i64::try_from(after).unwrap_or(i64::MAX),
                            order.as_ref().map(OrderId::as_str),
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        event_from_row,
                    )
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(into_error)
            })
            .await
    }

    async fn latest_event(&self, order: &OrderId) -> Result<Option<OrderEvent>, Error> {
        let order = order.clone();
        self.readers
            .read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM order_events
                     WHERE order_id = ?1 ORDER BY sequence DESC LIMIT 1"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_row(params![order.as_str()], event_from_row)
                        .optional()
                })
                .map_err(into_error)
            })
            .await
    }

    async fn log_bounds(&self) -> Result<LogBounds, Error> {
        self.readers
            .read(|conn| {
                let complete_after = events_pruned_through(conn)?;
                let latest: Option<i64> = conn
                    .query_row(
                        "SELECT seq FROM sqlite_sequence WHERE name = 'order_events'",
                        [],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(into_error)?;
                Ok(LogBounds {
                    complete_after,
                    latest: latest.unwrap_or(0) as u64,
                })
            })
            .await
    }

    fn subscribe(&self) -> LiveReceiver {
        self.live.subscribe()
    }

    async fn ping(&self) -> Result<(), Error> {
        if self.commands.is_closed() {
            return Err(Error::Unavailable("the SQLite writer has stopped".into()));
        }
        self.check_writes().await?;
        self.readers
            .read(move |conn| {
                conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                    .map_err(into_error)
            })
            .await
    }

    async fn prune(&self) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Prune { reply }).await?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the SQLite writer has stopped".into()))?
    }
}

/// Takes the lock file next to the database (`PATH.lock`) for this process, or says who has it.
fn lock_exclusively(path: &Path) -> Result<std::fs::File, Error> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| {
            Error::Unavailable(
                format!("cannot open lock file {}: {error}", lock_path.display()).into(),
            )
        })?;
    file.try_lock().map_err(|_| {
        Error::Unavailable(
            format!(
                "{} is in use by another order-service (lock {} is held); \
                 an SQLite store serves one process",
                path.display(),
                lock_path.display()
            )
            .into(),
        )
    })?;
    Ok(file)
}

/// The highest event sequence pruning has deleted: every event after it is still stored.
fn events_pruned_through(conn: &rusqlite::Connection) -> Result<u64, Error> {
    let through: i64 = conn
        .query_row(
            "SELECT value FROM store_meta WHERE name = 'events_pruned_through'",
            [],
            |row| row.get(0),
        )
        .map_err(into_error)?;
    Ok(u64::try_from(through).unwrap_or(0))
}

/// Loads the newest orders into the cache, oldest of them first (they are forgotten first).
fn warm(conn: &rusqlite::Connection, cache: &OrderCache) -> rusqlite::Result<()> {
    let mut statement = conn.prepare(&format!(
        "SELECT {ORDER_COLUMNS} FROM (SELECT * FROM orders ORDER BY seq DESC LIMIT ?1) ORDER BY seq"
    ))?;
    let orders = statement.query_map(params![WARM_ORDERS], order_from_row)?;
    for order in orders {
        cache.put(order?);
    }
    Ok(())
}
