//! Opening SQLite connections with the settings the store relies on, and bringing the schema up
//! to date with the migrations in this folder (tracked in `PRAGMA user_version`).

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Migrations in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[include_str!("schema.sql"), include_str!("schema_v2.sql")];

/// How long a connection waits for a lock held by another connection before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the writer connection, creating the file if needed, and migrates it. A WAL that
/// SQLite starts over is cut back to `wal_limit_bytes` (`journal_size_limit`), rather than kept
/// at the largest size it ever reached.
pub(super) fn open_writer(path: &Path, wal_limit_bytes: u64) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    keep_temporaries_in_memory(&conn)?;
    // WAL lets readers work while the writer commits. synchronous=FULL syncs the WAL on every
    // commit: an acknowledged write survives power loss, not just a process crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints run on their own thread (see checkpointer.rs), never inside our commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    limit_journal_size(&conn, wal_limit_bytes)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens the connection that checkpoints the WAL (see [`open_writer`] for the limit).
pub(super) fn open_checkpointer(path: &Path, wal_limit_bytes: u64) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    limit_journal_size(&conn, wal_limit_bytes)?;
    Ok(conn)
}

fn limit_journal_size(conn: &Connection, bytes: u64) -> rusqlite::Result<()> {
    conn.pragma_update(
        None,
        "journal_size_limit",
        i64::try_from(bytes).unwrap_or(i64::MAX),
    )
}

/// Opens a read-only connection to an existing, migrated database.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    keep_temporaries_in_memory(&conn)?;
    Ok(conn)
}

/// Statement journals (one per savepoint) and temporary tables stay in memory. On disk they
/// go to a temp directory, which a `FROM scratch` image with a read-only root does not have:
/// the write of a large batch then failed with an I/O error that rolled back the whole batch.
fn keep_temporaries_in_memory(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "temp_store", "MEMORY")
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database has schema version {applied}, newer than this build knows ({}); \
             refusing to run an older order-service against it",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied schema migration");
    }
    Ok(())
}
