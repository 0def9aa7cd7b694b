//! The statements the writer runs for every write, each looked up in the connection's
//! statement cache once per batch rather than once per write: a lookup hashes the whole SQL
//! text, and a batch runs the same few statements for each of its writes.

use super::rows::ORDER_COLUMNS;
use rusqlite::{CachedStatement, Connection};

/// A statement the writer runs for every write of some kind.
#[derive(Debug, Clone, Copy)]
pub(super) enum Sql {
    /// Inserts a create's idempotency record unless its key is taken (one row changed or none).
    ClaimKey,
    /// Inserts the idempotency record of a write whose key was looked up first.
    InsertKey,
    /// The fingerprint and first response stored under a key.
    SelectKey,
    /// Inserts a new order.
    InsertOrder,
    /// Moves an order from one version to the next.
    UpdateOrder,
    /// Appends an event.
    AppendEvent,
}

impl Sql {
    const COUNT: usize = 6;

    fn text(self) -> String {
        match self {
            Sql::ClaimKey => "INSERT INTO idempotency_keys
                                  (principal, request_id, fingerprint, response, created_at)
                              VALUES (?1, ?2, ?3, ?4, ?5)
                              ON CONFLICT (principal, request_id) DO NOTHING"
                .into(),
            Sql::InsertKey => "INSERT INTO idempotency_keys
                                   (principal, request_id, fingerprint, response, created_at)
                               VALUES (?1, ?2, ?3, ?4, ?5)"
                .into(),
            Sql::SelectKey => "SELECT fingerprint, response FROM idempotency_keys
                               WHERE principal = ?1 AND request_id = ?2"
                .into(),
            Sql::InsertOrder => format!(
                "INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            Sql::UpdateOrder => "UPDATE orders SET status = ?1, version = ?2, update_time = ?3
                                 WHERE order_id = ?4 AND version = ?5"
                .into(),
            Sql::AppendEvent => "INSERT INTO order_events
                                     (order_id, previous_status, event_time, reason, snapshot,
                                      trace_parent)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                .into(),
        }
    }
}

/// The statements of one batch, prepared on first use; they go back to the connection's
/// cache when this is dropped (before the batch commits or rolls back).
pub(super) struct Statements<'c> {
    conn: &'c Connection,
    prepared: [Option<CachedStatement<'c>>; Sql::COUNT],
}

impl<'c> Statements<'c> {
    /// No statement prepared yet, on the batch's connection.
    pub(super) fn new(conn: &'c Connection) -> Self {
        Statements {
            conn,
            prepared: Default::default(),
        }
    }

    /// The connection the statements run on.
    pub(super) fn conn(&self) -> &'c Connection {
        self.conn
    }

    /// `sql`, prepared.
    pub(super) fn get(&mut self, sql: Sql) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let slot = &mut self.prepared[sql as usize];
        Ok(match slot {
            Some(statement) => statement,
            None => slot.insert(self.conn.prepare_cached(&sql.text())?),
        })
    }
}
