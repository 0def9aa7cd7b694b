//! The write baseline: single-row transactions into an SQLite file in WAL mode with
//! synchronous=FULL, one at a time, so every commit waits for its own fsync of the WAL — what a
//! durable store without group commit can do on this disk.

use rusqlite::{Connection, params};
use std::path::Path;
use std::time::{Duration, Instant};

/// Commits made in a measured window.
#[derive(Debug, Clone, Copy)]
pub struct CommitRate {
    /// Transactions committed (one row each).
    pub commits: u64,
    /// How long committing them took.
    pub elapsed: Duration,
}

impl CommitRate {
    /// Commits per second.
    pub fn per_second(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }
}

/// Opens (creating) the baseline database at `path` with the durability settings the service
/// uses: WAL journal, synchronous=FULL.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS orders (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             order_id TEXT NOT NULL UNIQUE,
             body TEXT NOT NULL
         )",
    )?;
    Ok(conn)
}

/// Commits one-row transactions (autocommit inserts) into `conn` for `duration`.
pub fn single_row_commits(conn: &Connection, duration: Duration) -> rusqlite::Result<CommitRate> {
    let body = r#"{"customer_id":"bench-customer-0001","currency":"EUR","items":[{"sku":"SKU-COFFEE-BEANS-1KG","quantity":2,"unit_price_cents":1899},{"sku":"SKU-FILTER-PAPERS-100","quantity":1,"unit_price_cents":349}]}"#;
    let mut insert = conn.prepare("INSERT INTO orders (order_id, body) VALUES (?1, ?2)")?;
    let next: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM orders", [], |row| {
        row.get(0)
    })?;
    let started = Instant::now();
    let mut commits = 0u64;
    while started.elapsed() < duration {
        let id = next + i64::try_from(commits).unwrap_or(i64::MAX);
        insert.execute(params![format!("fsync-{id:016}"), body])?;
        commits += 1;
    }
    Ok(CommitRate {
        commits,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_commit_is_a_row_on_disk_in_wal_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("baseline.db");
        let conn = open(&path).expect("open");
        let rate = single_row_commits(&conn, Duration::from_millis(50)).expect("commits");
        assert!(rate.commits > 0);
        drop(conn);
        let reopened = Connection::open(&path).expect("reopen");
        let rows: u64 = reopened
            .query_row("SELECT count(*) FROM orders", [], |row| row.get(0))
            .expect("count");
        assert_eq!(rows, rate.commits);
        let mode: String = reopened
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("journal mode");
        assert_eq!(mode, "wal");
    }
}
