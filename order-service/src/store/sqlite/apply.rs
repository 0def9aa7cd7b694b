//! Applying one write inside the writer's transaction: the reads and the domain's decision
//! first, then the rows (the order, its event, the idempotency record), so that a write refused
//! for a reason of its own has changed nothing. A create with a key claims its key first: that
//! insert is its lookup, and when the key is taken it has written nothing either.

use super::rows::{find_order, into_error};
use super::statements::{Sql, Statements};
use crate::domain::{
    Change, Effect, Error, Order, OrderEvent, OrderStatus, RequestId, Write, WriteOutcome,
    concurrent_change, decide, replay,
};
use crate::store::record;
use rusqlite::{OptionalExtension, params};

/// How a write failed, which says what is left to undo.
pub(super) enum Failed {
    /// Before it changed any row: the transaction holds nothing of it.
    Unchanged(Error),
    /// After it changed rows: the transaction holds part of it and must be rolled back.
    Changed(Error),
}

/// Applies one write inside the batch's transaction: idempotency check, the change, its event,
/// the idempotency record. What each of them means is decided in the domain
/// ([`crate::domain::replay`], [`crate::domain::decide`]); this only reads and writes rows.
/// Everything that can refuse the write runs before its first row is written.
pub(super) fn apply(
    statements: &mut Statements<'_>,
    write: &Write,
) -> Result<(WriteOutcome, Option<OrderEvent>), Failed> {
    if let (Change::Create(_), Some(request_id)) = (&write.change, &write.request_id) {
        return apply_keyed_create(statements, write, request_id);
    }
    let effect = match decide_write(statements, write).map_err(Failed::Unchanged)? {
        Decided::Replayed(outcome) => return Ok((outcome, None)),
        Decided::Apply(effect) => effect,
    };
    let stored = stored_text(write, &effect);
    persist(statements, write, effect, &stored, KeyRecord::Insert).map_err(Failed::Changed)
}

/// A create with an idempotency key claims the key before anything else. A new order depends
/// on no stored row, so its idempotency record can be written first, and inserting it is the
/// lookup too: one descent of the keys' b-tree instead of a SELECT and then an INSERT. When the
/// key is taken nothing was written, and the record stored under it answers.
fn apply_keyed_create(
    statements: &mut Statements<'_>,
    write: &Write,
    request_id: &RequestId,
) -> Result<(WriteOutcome, Option<OrderEvent>), Failed> {
    let effect = decide(&write.change, None, write.now).map_err(Failed::Unchanged)?;
    let stored = stored_text(write, &effect);
    let claimed = write_key_record(statements, Sql::ClaimKey, write, request_id, &stored)
        // Whatever SQLite undid of a failed insert, the batch is retried without this write.
        .map_err(|error| Failed::Changed(into_error(error)))?;
    if claimed == 0 {
        let outcome = stored_answer(statements, write, request_id)
            .and_then(|answer| answer.ok_or_else(|| Error::internal("a claimed key has no record")))
            .map_err(Failed::Unchanged)?;
        return Ok((outcome, None));
    }
    persist(statements, write, effect, &stored, KeyRecord::Claimed).map_err(Failed::Changed)
}

/// Writes `write`'s idempotency record under `request_id` with `sql` (an insert, or one that
/// leaves a taken key alone): the rows written, 0 or 1.
fn write_key_record(
    statements: &mut Statements<'_>,
    sql: Sql,
    write: &Write,
    request_id: &RequestId,
    stored: &str,
) -> rusqlite::Result<usize> {
    statements.get(sql).and_then(|statement| {
        statement.execute(params![
            write.principal.as_str(),
            request_id.as_str(),
            &write.fingerprint().0[..],
            stored,
            write.now.0
        ])
    })
}

/// The answer the record stored under `request_id` gives to `write`, if there is one: the
/// first response for the same request, `IdempotencyKeyReused` for another.
fn stored_answer(
    statements: &mut Statements<'_>,
    write: &Write,
    request_id: &RequestId,
) -> Result<Option<WriteOutcome>, Error> {
    let stored: Option<(Vec<u8>, String)> = statements
        .get(Sql::SelectKey)
        .and_then(|statement| {
            statement
                .query_row(
                    params![write.principal.as_str(), request_id.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
        })
        .map_err(into_error)?;
    let Some((stored_fingerprint, response)) = stored else {
        return Ok(None);
    };
    let first_response = record::decode_order(&response).map_err(Error::internal)?;
    replay(write, &stored_fingerprint, first_response).map(Some)
}

/// The order as the write leaves it, in its stored form, when a row needs it: the event's
/// snapshot and the idempotency record's response are the same text, encoded once.
fn stored_text(write: &Write, effect: &Effect) -> String {
    if effect.appends_event() || write.request_id.is_some() {
        record::encode_order(effect.order())
    } else {
        String::new()
    }
}

/// Whether [`persist`] still writes the write's idempotency record.
#[derive(PartialEq, Eq)]
enum KeyRecord {
    /// Insert it (if the write has a key) after the order and its event.
    Insert,
    /// It is already written: the create claimed its key first.
    Claimed,
}

/// What a write does, decided from rows read in the transaction (nothing written yet).
enum Decided {
    /// The key was used before with the same request: its first answer, nothing to write.
    Replayed(WriteOutcome),
    /// The change to persist.
    Apply(Effect),
}

fn decide_write(statements: &mut Statements<'_>, write: &Write) -> Result<Decided, Error> {
    if let Some(request_id) = &write.request_id
        && let Some(outcome) = stored_answer(statements, write, request_id)?
    {
        return Ok(Decided::Replayed(outcome));
    }
    let current = match &write.change {
        Change::Create(_) => None,
        Change::UpdateStatus(update) => find_order(statements.conn(), &update.order_id)?,
    };
    decide(&write.change, current, write.now).map(Decided::Apply)
}

/// Writes what was decided: the order, its event, the idempotency record (unless claimed
/// already). `stored` is the order's stored text ([`stored_text`]).
fn persist(
    statements: &mut Statements<'_>,
    write: &Write,
    effect: Effect,
    stored: &str,
    key: KeyRecord,
) -> Result<(WriteOutcome, Option<OrderEvent>), Error> {
    let event = match &effect {
        Effect::Insert(order) => {
            insert_order(statements, order)?;
            Some(append_event(statements, order, stored, None, "", write)?)
        }
        Effect::Update { from, to } => {
            update_order(statements, from, to)?;
            Some(append_event(
                statements,
                to,
                stored,
                Some(from.status),
                write.change.reason(),
                write,
            )?)
        }
        Effect::Unchanged(_) => None,
    };
    let order = effect.order().clone();
    if let Some(request_id) = write
        .request_id
        .as_ref()
        .filter(|_| key == KeyRecord::Insert)
    {
        write_key_record(statements, Sql::InsertKey, write, request_id, stored)
            .map_err(into_error)?;
    }
    Ok((
        WriteOutcome {
            order,
            replayed: false,
        },
        event,
    ))
}

fn insert_order(statements: &mut Statements<'_>, order: &Order) -> Result<(), Error> {
    statements
        .get(Sql::InsertOrder)
        .and_then(|statement| {
            statement.execute(params![
                order.id.as_str(),
                order.customer_id.as_str(),
                order.currency.as_str(),
                record::encode_items(&order.items),
                order.total_cents,
                order.status.number(),
                order.version,
                order.create_time.0,
                order.update_time.0,
            ])
        })
        .map_err(into_error)?;
    Ok(())
}

/// Moves the row still at `from`'s version to `to`; a row at another version is a lost race.
fn update_order(statements: &mut Statements<'_>, from: &Order, to: &Order) -> Result<(), Error> {
    let updated = statements
        .get(Sql::UpdateOrder)
        .and_then(|statement| {
            statement.execute(params![
                to.status.number(),
                to.version,
                to.update_time.0,
                to.id.as_str(),
                from.version,
            ])
        })
        .map_err(into_error)?;
    if updated == 1 {
        return Ok(());
    }
    let actual = find_order(statements.conn(), &from.id)?.map(|order| order.version);
    Err(concurrent_change(from, actual))
}

/// Appends the event that leaves `order` as it is; `snapshot` is its stored text.
fn append_event(
    statements: &mut Statements<'_>,
    order: &Order,
    snapshot: &str,
    previous_status: Option<OrderStatus>,
    reason: &str,
    write: &Write,
) -> Result<OrderEvent, Error> {
    let event_time = order.update_time;
    statements
        .get(Sql::AppendEvent)
        .and_then(|statement| {
            statement.execute(params![
                order.id.as_str(),
                previous_status.map_or(0, OrderStatus::number),
                event_time.0,
                reason,
                snapshot,
                write.trace_parent
            ])
        })
        .map_err(into_error)?;
    Ok(OrderEvent {
        sequence: statements.conn().last_insert_rowid() as u64,
        order: order.clone(),
        previous_status,
        event_time,
        trace_parent: write.trace_parent.clone(),
    })
}
