//! Mapping between PostgreSQL rows and domain values, and of PostgreSQL failures to the
//! domain's errors (a retry may help: `Unavailable`; anything else: `Internal`).

use crate::domain::{
    Currency, CustomerId, Error, Order, OrderEvent, OrderId, OrderStatus, UnixMicros,
};
use crate::store::record;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

/// Columns of `orders` in the order [`order_from_row`] reads them.
pub(super) const ORDER_COLUMNS: &str = "order_id, customer_id, currency, items, total_cents, status, version, create_time, update_time";

/// Columns of `order_events` in the order [`event_from_row`] reads them.
pub(super) const EVENT_COLUMNS: &str =
    "sequence, previous_status, event_time, snapshot, trace_parent";

/// Reads an order from a row selected with [`ORDER_COLUMNS`] starting at column `at`.
pub(super) fn order_from_row(row: &Row, at: usize) -> Result<Order, Error> {
    let get_text = |i: usize| row.try_get::<_, String>(at + i).map_err(Error::internal);
    let status: i32 = row.try_get(at + 5).map_err(Error::internal)?;
    Ok(Order {
        id: OrderId::parse(&get_text(0)?).map_err(corrupt("order id"))?,
        customer_id: CustomerId::parse(&get_text(1)?).map_err(corrupt("customer id"))?,
        currency: Currency::parse(&get_text(2)?).map_err(corrupt("currency"))?,
        items: record::decode_items(&get_text(3)?).map_err(Error::internal)?,
        total_cents: row.try_get(at + 4).map_err(Error::internal)?,
        status: OrderStatus::from_number(status)
            .ok_or_else(|| corrupt("status")(format!("unknown status {status}")))?,
        version: row.try_get(at + 6).map_err(Error::internal)?,
        create_time: UnixMicros(row.try_get(at + 7).map_err(Error::internal)?),
        update_time: UnixMicros(row.try_get(at + 8).map_err(Error::internal)?),
    })
}

/// Reads an event from a row selected with [`EVENT_COLUMNS`] starting at column `at`.
pub(super) fn event_from_row(row: &Row, at: usize) -> Result<OrderEvent, Error> {
    let sequence: i64 = row.try_get(at).map_err(Error::internal)?;
    let previous: i32 = row.try_get(at + 1).map_err(Error::internal)?;
    let snapshot: String = row.try_get(at + 3).map_err(Error::internal)?;
    Ok(OrderEvent {
        sequence: sequence as u64,
        previous_status: OrderStatus::from_number(previous),
        event_time: UnixMicros(row.try_get(at + 2).map_err(Error::internal)?),
        order: record::decode_order(&snapshot).map_err(Error::internal)?,
        trace_parent: row.try_get(at + 4).map_err(Error::internal)?,
    })
}

fn corrupt(what: &'static str) -> impl Fn(String) -> Error {
    move |problem| Error::internal(format!("stored {what} does not decode: {problem}"))
}

/// Whether the whole transaction should be run again: PostgreSQL chose it as a deadlock
/// victim or refused it for a serialization conflict; nothing of it was committed.
pub(super) fn is_retryable(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// Whether the connection is gone (closed, killed, the server restarting): the work may be
/// tried again on another connection.
pub(super) fn is_connection_loss(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        // An I/O error or a protocol failure: the connection is unusable.
        None => true,
        Some(code) => {
            let code = code.code();
            // Connection exceptions, and admin/crash shutdown, cannot-connect-now.
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
}

/// Maps a PostgreSQL failure to the domain: a lost connection, a server shutting down or out of
/// resources, a statement timeout or a lock not granted in time are `Unavailable` (a retry with
/// the same idempotency key may succeed); anything else is internal.
pub(super) fn into_error(error: tokio_postgres::Error) -> Error {
    let transient = is_connection_loss(&error)
        || is_retryable(&error)
        || error.code().is_some_and(|code| {
            let code = code.code();
            code.starts_with("53") // insufficient resources
                || code.starts_with("58") // system error (I/O)
                || matches!(code, "57014" | "55P03") // statement timeout, lock not available
        });
    if transient {
        Error::Unavailable(Box::new(error))
    } else {
        Error::Internal(Box::new(error))
    }
}

/// Maps a failure to get a pooled connection: the server cannot be reached (or every connection
/// is busy for longer than the pool waits).
pub(super) fn pool_error(error: deadpool_postgres::PoolError) -> Error {
    Error::Unavailable(Box::new(error))
}
