//! The write decisions every store makes the same way, whatever database runs them: what a
//! repeated idempotency key means, what a change does to an order, and what a versioned update
//! that matched no row means. A backend reads what these functions need, calls them inside its
//! transaction and persists what they return; it decides nothing of its own.

use super::{Change, Error, Order, OrderStatus, UnixMicros, Write, WriteOutcome};

/// The answer to a write whose idempotency key is already recorded with `stored_fingerprint`
/// and `first_response` (the order as the first call left it): the first response again when
/// the request is the same, `IdempotencyKeyReused` when it is not. Nothing is changed either way.
pub fn replay(
    write: &Write,
    stored_fingerprint: &[u8],
    first_response: Order,
) -> Result<WriteOutcome, Error> {
    if stored_fingerprint != write.fingerprint().0 {
        return Err(Error::IdempotencyKeyReused);
    }
    Ok(WriteOutcome {
        order: first_response,
        replayed: true,
    })
}

/// What a change does to the stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A new order: insert it and append its creation event.
    Insert(Order),
    /// An order moves on: update the row still at `from.version` to `to` (a row at another
    /// version is a lost race, see [`concurrent_change`]) and append the event.
    Update {
        /// The order as read in this transaction.
        from: Order,
        /// The order after the change.
        to: Order,
    },
    /// The order already is what was asked: nothing is written, no event appended.
    Unchanged(Order),
}

impl Effect {
    /// The order as the write leaves it (the caller's response).
    pub fn order(&self) -> &Order {
        match self {
            Effect::Insert(order) | Effect::Unchanged(order) => order,
            Effect::Update { to, .. } => to,
        }
    }

    /// The status before the change: `None` for a creation (and for no change).
    pub fn previous_status(&self) -> Option<OrderStatus> {
        match self {
            Effect::Update { from, .. } => Some(from.status),
            Effect::Insert(_) | Effect::Unchanged(_) => None,
        }
    }

    /// Whether the write appends an event.
    pub fn appends_event(&self) -> bool {
        !matches!(self, Effect::Unchanged(_))
    }
}

/// Decides what `change` does, given the order's `current` stored state (read in the same
/// transaction; `None` when there is none, and always `None` for a creation, whose id is new).
pub fn decide(change: &Change, current: Option<Order>, now: UnixMicros) -> Result<Effect, Error> {
    match change {
        Change::Create(create) => {
            if current.is_some() {
                return Err(Error::internal(format!(
                    "order id {} is already taken: ids are generated and never reused",
                    create.order_id
                )));
            }
            Ok(Effect::Insert(
                create
                    .order
                    .clone()
                    .into_order(create.order_id.clone(), now),
            ))
        }
        Change::UpdateStatus(update) => {
            let current = current.ok_or_else(|| Error::NotFound(update.order_id.clone()))?;
            match current.change_status(update.target, update.expected_version, now)? {
                None => Ok(Effect::Unchanged(current)),
                Some(to) => Ok(Effect::Update { from: current, to }),
            }
        }
    }
}

/// The error for an [`Effect::Update`] whose row was no longer at `from`'s version when the
/// update ran (another writer got there first): the caller's view is stale, never a silent
/// overwrite. `actual` is the version now stored, when the backend read it.
pub fn concurrent_change(from: &Order, actual: Option<i64>) -> Error {
    Error::VersionMismatch {
        expected: from.version,
        actual: actual.unwrap_or(from.version + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        CreateOrder, NewOrder, OrderId, Principal, RawLineItem, RequestId, UpdateStatus, Violations,
    };

    fn new_order() -> NewOrder {
        let mut violations = Violations::default();
        let item = RawLineItem {
            sku: "A",
            quantity: 2,
            unit_price_cents: 5,
        };
        NewOrder::parse("c-1", [item].into_iter(), "EUR", &mut violations).unwrap()
    }

    fn create() -> Write {
        Write {
            principal: Principal::new("p"),
            request_id: Some(RequestId::parse("k").unwrap()),
            change: Change::Create(CreateOrder {
                order_id: OrderId::parse("ord_1").unwrap(),
                order: new_order(),
            }),
            now: UnixMicros(7),
            trace_parent: None,
        }
    }

    fn update(target: OrderStatus, expected_version: Option<i64>) -> Change {
        Change::UpdateStatus(UpdateStatus {
            order_id: OrderId::parse("ord_1").unwrap(),
            target,
            expected_version,
            reason: String::new(),
        })
    }

    #[test]
    fn a_creation_inserts_a_pending_order_at_version_1() {
        let effect = decide(&create().change, None, UnixMicros(7)).unwrap();
        let Effect::Insert(order) = &effect else {
            panic!("{effect:?}")
        };
        assert_eq!(
            (order.status, order.version, order.total_cents),
            (OrderStatus::Pending, 1, 10)
        );
        assert!(effect.appends_event());
        assert_eq!(effect.previous_status(), None);
    }

    #[test]
    fn a_replay_answers_the_first_response_only_to_the_same_request() {
        let write = create();
        let first = decide(&write.change, None, UnixMicros(1))
            .unwrap()
            .order()
            .clone();
        let replayed = replay(&write, &write.fingerprint().0, first.clone()).unwrap();
        assert!(replayed.replayed);
        assert_eq!(replayed.order, first);
        assert!(matches!(
            replay(&write, &[0; 32], first),
            Err(Error::IdempotencyKeyReused)
        ));
    }

    #[test]
    fn updates_follow_the_status_machine_and_the_version() {
        let order = decide(&create().change, None, UnixMicros(1))
            .unwrap()
            .order()
            .clone();
        assert!(matches!(
            decide(&update(OrderStatus::Paid, None), None, UnixMicros(2)),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            decide(
                &update(OrderStatus::Pending, None),
                Some(order.clone()),
                UnixMicros(2)
            ),
            Ok(Effect::Unchanged(_))
        ));
        assert!(matches!(
            decide(
                &update(OrderStatus::Paid, Some(3)),
                Some(order.clone()),
                UnixMicros(2)
            ),
            Err(Error::VersionMismatch {
                expected: 3,
                actual: 1
            })
        ));
        assert!(matches!(
            decide(
                &update(OrderStatus::Delivered, None),
                Some(order.clone()),
                UnixMicros(2)
            ),
            Err(Error::InvalidTransition { .. })
        ));
        let effect = decide(
            &update(OrderStatus::Paid, Some(1)),
            Some(order),
            UnixMicros(2),
        )
        .unwrap();
        assert_eq!(effect.previous_status(), Some(OrderStatus::Pending));
        assert_eq!(effect.order().version, 2);
        let Effect::Update { from, .. } = &effect else {
            panic!("{effect:?}")
        };
        assert!(matches!(
            concurrent_change(from, Some(5)),
            Error::VersionMismatch {
                expected: 1,
                actual: 5
            }
        ));
    }
}
