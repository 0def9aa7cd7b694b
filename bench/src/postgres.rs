//! PostgreSQL for `pg-bench`: the server named by `ORDER_STATUS_TEST_POSTGRES`, a database of
//! the run's own made on it and dropped at the end, the settings that decide durability, and the
//! write baseline: single-row transactions committed one at a time by each of one or many
//! clients, so every commit waits for a WAL flush, shared between clients only by PostgreSQL's
//! own group commit.

use crate::fsync_baseline::CommitRate;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls};

/// The variable naming the server: a URL of its `postgres` database as a superuser, as
/// `scripts/with-postgres.sh` exports it.
pub const SERVER_URL_VARIABLE: &str = "ORDER_STATUS_TEST_POSTGRES";

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The URL is not a `postgres://` or `postgresql://` URL.
    #[error("{url:?} is not a postgres:// or postgresql:// URL")]
    NotAUrl {
        /// The URL, as given.
        url: String,
    },
    /// Connecting failed.
    #[error("connecting to {what}")]
    Connect {
        /// Which database.
        what: String,
        /// What connecting failed with.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error("{what}")]
    Statement {
        /// What the statement was for.
        what: String,
        /// What PostgreSQL answered.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A baseline client's task ended abnormally.
    #[error("a baseline client's task failed")]
    Task(#[source] tokio::task::JoinError),
}

fn statement(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PostgresError {
    let what = what.into();
    move |source| PostgresError::Statement { what, source }
}

/// `url` with its database replaced by `database` (the query, such as `sslmode`, is kept).
pub fn with_database(url: &str, database: &str) -> Result<String, PostgresError> {
    let not_a_url = || PostgresError::NotAUrl {
        url: url.to_owned(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(not_a_url)?;
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(not_a_url());
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(authority, _)| authority);
    let mut replaced = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    Ok(replaced)
}

/// Connects without TLS (the benchmark's server is local) and drives the connection on a task
/// of its own, which ends when the client is dropped.
pub async fn connect(url: &str, what: &str) -> Result<Client, PostgresError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|source| PostgresError::Connect {
            what: what.to_owned(),
            source,
        })?;
    tokio::spawn(async move {
        // The client sees a broken connection as errors on its own calls.
        let _ = connection.await;
    });
    Ok(client)
}

/// The server's version and the settings that decide what a commit costs.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// `server_version`.
    pub version: String,
    /// `fsync`: `on` or `off`.
    pub fsync: String,
    /// `synchronous_commit`.
    pub synchronous_commit: String,
    /// `wal_sync_method`.
    pub wal_sync_method: String,
    /// `commit_delay` (µs a commit waits for others to join its flush).
    pub commit_delay: String,
    /// `data_directory` (readable by superusers only).
    pub data_directory: String,
    /// `max_connections`.
    pub max_connections: String,
}

impl ServerFacts {
    /// Reads them with `SHOW`.
    pub async fn read(client: &Client) -> Result<ServerFacts, PostgresError> {
        let show = |name: &'static str| async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map_err(statement(format!("SHOW {name}")))?;
            Ok::<String, PostgresError>(row.get(0))
        };
        Ok(ServerFacts {
            version: show("server_version").await?,
            fsync: show("fsync").await?,
            synchronous_commit: show("synchronous_commit").await?,
            wal_sync_method: show("wal_sync_method").await?,
            commit_delay: show("commit_delay").await?,
            data_directory: show("data_directory").await?,
            max_connections: show("max_connections").await?,
        })
    }

    /// Whether an acknowledged commit is on disk: fsync on, and the commit waiting for its
    /// WAL flush (every `synchronous_commit` but `off` waits for the local flush).
    pub fn durable(&self) -> bool {
        self.fsync == "on" && self.synchronous_commit != "off"
    }

    /// The postmaster's process id from `postmaster.pid` in the data directory, when the
    /// server runs on this machine and the file is readable.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text =
            std::fs::read_to_string(Path::new(&self.data_directory).join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// A database of this run's own on the server, dropped by [`BenchDatabase::drop_database`].
#[derive(Debug)]
pub struct BenchDatabase {
    admin: Client,
    /// Its name.
    pub name: String,
    /// A URL of it, the server URL with the database replaced.
    pub url: String,
}

impl BenchDatabase {
    /// Creates database `name` through `admin` (connected to `server_url`).
    pub async fn create(
        admin: Client,
        server_url: &str,
        name: &str,
    ) -> Result<BenchDatabase, PostgresError> {
        let url = with_database(server_url, name)?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(statement(format!("creating database {name}")))?;
        Ok(BenchDatabase {
            admin,
            name: name.to_owned(),
            url,
        })
    }

    /// Drops the database, disconnecting whoever is still connected.
    pub async fn drop_database(self) -> Result<(), PostgresError> {
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .map_err(statement(format!("dropping database {}", self.name)))
    }
}

/// The baseline's table: one row per commit, a body the size of a stored order.
pub async fn create_baseline_table(client: &Client) -> Result<(), PostgresError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS commit_baseline (
                 seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 order_id text   NOT NULL UNIQUE,
                 body     text   NOT NULL
             )",
        )
        .await
        .map_err(statement("creating the baseline table"))
}

const BODY: &str = r#"{"customer_id":"bench-customer-0001","currency":"EUR","items":[{"sku":"SKU-COFFEE-BEANS-1KG","quantity":2,"unit_price_cents":1899},{"sku":"SKU-FILTER-PAPERS-100","quantity":1,"unit_price_cents":349}]}"#;

/// Every client commits one-row transactions (autocommit inserts, one at a time each) into
/// `commit_baseline` for `warmup`, then for `measure`; returns the commits completed in the
/// measured window. Keys start with `key_prefix`, which must differ between calls.
pub async fn single_row_commits(
    clients: &[Arc<Client>],
    key_prefix: &str,
    warmup: Duration,
    measure: Duration,
) -> Result<CommitRate, PostgresError> {
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = JoinSet::new();
    for (number, client) in clients.iter().enumerate() {
        let client = Arc::clone(client);
        let prefix = format!("{key_prefix}-c{number}");
        tasks.spawn(async move {
            let insert = client
                .prepare("INSERT INTO commit_baseline (order_id, body) VALUES ($1, $2)")
                .await
                .map_err(statement("preparing the baseline insert"))?;
            let mut commits = 0u64;
            for n in 0u64.. {
                if Instant::now() >= end {
                    break;
                }
                client
                    .execute(&insert, &[&format!("{prefix}-{n}"), &BODY])
                    .await
                    .map_err(statement("a baseline insert"))?;
                let done = Instant::now();
                if done >= start && done < end {
                    commits += 1;
                }
            }
            Ok::<u64, PostgresError>(commits)
        });
    }
    let mut commits = 0;
    while let Some(joined) = tasks.join_next().await {
        commits += joined.map_err(PostgresError::Task)??;
    }
    Ok(CommitRate {
        commits,
        elapsed: measure,
    })
}

/// WAL flushes the server has made since its statistics were reset (`pg_stat_wal.wal_sync`,
/// PostgreSQL 14 and later, counted when fsync is on), or `None` where it cannot be read.
pub async fn wal_flushes(client: &Client) -> Option<u64> {
    let row = client
        .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
        .await
        .ok()?;
    u64::try_from(row.try_get::<_, i64>(0).ok()?).ok()
}

/// Opens `count` connections to `url`, one at a time.
pub async fn connect_many(url: &str, count: usize) -> Result<Vec<Arc<Client>>, PostgresError> {
    let mut clients = Vec::with_capacity(count);
    for number in 0..count {
        let what = format!("the benchmark database (baseline client {number} of {count})");
        clients.push(Arc::new(connect(url, &what).await?));
    }
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_replaced_and_the_rest_kept() {
        let cases = [
            (
                "postgresql://postgres@%2Ftmp%2Fpg.x/postgres",
                "postgresql://postgres@%2Ftmp%2Fpg.x/bench_1",
            ),
            (
                "postgres://u:p@db.example:5433/postgres?sslmode=require",
                "postgres://u:p@db.example:5433/bench_1?sslmode=require",
            ),
            ("postgres://localhost", "postgres://localhost/bench_1"),
            (
                "postgres://localhost?sslmode=disable",
                "postgres://localhost/bench_1?sslmode=disable",
            ),
        ];
        for (server, expected) in cases {
            assert_eq!(with_database(server, "bench_1").unwrap(), expected);
        }
        for bad in ["host=/tmp dbname=postgres", "mysql://localhost/x"] {
            assert!(with_database(bad, "bench_1").is_err(), "{bad}");
        }
    }
}
