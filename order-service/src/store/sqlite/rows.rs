//! Mapping between SQLite rows and domain values, shared by the writer and the readers.

use crate::domain::{
    Currency, CustomerId, Error, Order, OrderEvent, OrderId, OrderStatus, UnixMicros,
};
use crate::store::record;
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Columns of `orders` in the order [`order_from_row`] reads them.
pub(super) const ORDER_COLUMNS: &str = "order_id, customer_id, currency, items, total_cents, status, version, create_time, update_time";

/// Columns of `order_events` in the order [`event_from_row`] reads them.
pub(super) const EVENT_COLUMNS: &str =
    "sequence, previous_status, event_time, snapshot, trace_parent";

/// Reads an order from a row selected with [`ORDER_COLUMNS`].
pub(super) fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    let status: i32 = row.get(5)?;
    Ok(Order {
        id: OrderId::parse(&row.get::<_, String>(0)?).map_err(corrupt(0))?,
        customer_id: CustomerId::parse(&row.get::<_, String>(1)?).map_err(corrupt(1))?,
        currency: Currency::parse(&row.get::<_, String>(2)?).map_err(corrupt(2))?,
        items: record::decode_items(&row.get::<_, String>(3)?).map_err(corrupt(3))?,
        total_cents: row.get(4)?,
        status: OrderStatus::from_number(status)
            .ok_or_else(|| corrupt(5)(format!("unknown status {status}")))?,
        version: row.get(6)?,
        create_time: UnixMicros(row.get(7)?),
        update_time: UnixMicros(row.get(8)?),
    })
}

/// Reads an event from a row selected with [`EVENT_COLUMNS`].
pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<OrderEvent> {
    let sequence: i64 = row.get(0)?;
    let previous: i32 = row.get(1)?;
    Ok(OrderEvent {
        sequence: sequence as u64,
        previous_status: OrderStatus::from_number(previous),
        event_time: UnixMicros(row.get(2)?),
        order: record::decode_order(&row.get::<_, String>(3)?).map_err(corrupt(3))?,
        trace_parent: row.get(4)?,
    })
}

/// One order by id, if it exists.
pub(super) fn find_order(conn: &Connection, id: &OrderId) -> Result<Option<Order>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?1"
    ))
    .and_then(|mut statement| {
        statement
            .query_row(params![id.as_str()], order_from_row)
            .optional()
    })
    .map_err(into_error)
}

/// One order by id.
pub(super) fn select_order(conn: &Connection, id: &OrderId) -> Result<Order, Error> {
    find_order(conn, id)?.ok_or_else(|| Error::NotFound(id.clone()))
}

/// Maps a SQLite failure to the domain: lock timeouts and I/O trouble are "unavailable" (a retry
/// may succeed), everything else is internal.
pub(super) fn into_error(error: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::*;
    match error.sqlite_error_code() {
        Some(
            DatabaseBusy
            | DatabaseLocked
            | SystemIoFailure
            | DiskFull
            | CannotOpen
            | ReadOnly
            | FileLockingProtocolFailed,
        ) => Error::Unavailable(Box::new(error)),
        _ => Error::Internal(Box::new(error)),
    }
}

pub(super) fn corrupt<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    index: usize,
) -> impl Fn(E) -> rusqlite::Error {
    move |error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, error.into())
    }
}
