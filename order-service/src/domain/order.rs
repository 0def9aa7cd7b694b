//! Orders and line items as validated values, the writes that change them, and the events those
//! writes leave behind.

use super::idempotency::Fingerprinter;
use super::validation::char_count;
use super::{Error, Fingerprint, OrderStatus, Principal, RequestId, UnixMicros, Violations};
use std::fmt;

/// Most line items one order may have.
pub const MAX_ITEMS: usize = 100;
/// Most units of one line item.
pub const MAX_QUANTITY: u32 = 10_000;
/// Longest free-text reason kept with a status change.
pub const MAX_REASON_CHARS: usize = 1_024;

/// A server-assigned order id: `ord_` and 32 lower-case hex digits of a UUIDv7, so ids are
/// URL-safe, unique and roughly time-ordered (kind to B-tree indexes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    /// A fresh, unique id.
    pub fn generate() -> Self {
        OrderId(format!("ord_{}", uuid::Uuid::now_v7().simple()))
    }

    /// An id as a caller sent it. Ids are opaque, so anything non-empty and not absurdly long is
    /// accepted (an unknown one is simply not found).
    pub fn parse(value: &str) -> Result<Self, String> {
        char_count(value, 1, 128)?;
        Ok(OrderId(value.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who the order is for: 1-128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomerId(String);

impl CustomerId {
    /// Validates a customer id.
    pub fn parse(value: &str) -> Result<Self, String> {
        char_count(value, 1, 128)?;
        Ok(CustomerId(value.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Stock keeping unit: 1-64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sku(String);

impl Sku {
    /// Validates a SKU.
    pub fn parse(value: &str) -> Result<Self, String> {
        char_count(value, 1, 64)?;
        Ok(Sku(value.to_owned()))
    }

    /// The SKU.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    /// Validates the form of a currency code.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(value.to_owned()))
        } else {
            Err(format!(
                "must be three upper-case letters (ISO 4217, e.g. EUR), got {value:?}"
            ))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One validated line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    /// What is ordered.
    pub sku: Sku,
    /// How many: 1 to [`MAX_QUANTITY`].
    pub quantity: u32,
    /// Price of one unit in cents, zero or more.
    pub unit_price_cents: i64,
}

/// An order as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Server-assigned id.
    pub id: OrderId,
    /// Who the order is for.
    pub customer_id: CustomerId,
    /// What is ordered, in the caller's order.
    pub items: Vec<LineItem>,
    /// The currency of every price.
    pub currency: Currency,
    /// Sum of quantity x unit price, computed here, never taken from the caller.
    pub total_cents: i64,
    /// Current status.
    pub status: OrderStatus,
    /// 1 on creation, +1 on every change; the handle for optimistic concurrency.
    pub version: i64,
    /// When the order was created.
    pub create_time: UnixMicros,
    /// When it last changed.
    pub update_time: UnixMicros,
}

impl Order {
    /// Applies a status change under the status machine and optimistic concurrency rules.
    /// `Ok(None)` means the order already has `target`: nothing changes.
    pub fn change_status(
        &self,
        target: OrderStatus,
        expected_version: Option<i64>,
        now: UnixMicros,
    ) -> Result<Option<Order>, Error> {
        if let Some(expected) = expected_version
            && expected != self.version
        {
            return Err(Error::VersionMismatch {
                expected,
                actual: self.version,
            });
        }
        if target == self.status {
            return Ok(None);
        }
        if !self.status.can_become(target) {
            return Err(Error::InvalidTransition {
                from: self.status,
                to: target,
            });
        }
        Ok(Some(Order {
            status: target,
            version: self.version + 1,
            // Clocks can step back; update_time never goes before the previous change.
            update_time: now.max(self.update_time),
            ..self.clone()
        }))
    }
}

/// A validated order that does not exist yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    customer_id: CustomerId,
    items: Vec<LineItem>,
    currency: Currency,
    total_cents: i64,
}

/// Raw fields of one line item as a caller sent them.
#[derive(Debug, Clone, Copy)]
pub struct RawLineItem<'a> {
    /// SKU as sent.
    pub sku: &'a str,
    /// Quantity as sent.
    pub quantity: u32,
    /// Unit price as sent.
    pub unit_price_cents: i64,
}

impl NewOrder {
    /// Validates a whole order, reporting every violation with its field path.
    pub fn parse<'a>(
        customer_id: &str,
        items: impl ExactSizeIterator<Item = RawLineItem<'a>>,
        currency: &str,
        violations: &mut Violations,
    ) -> Option<NewOrder> {
        let customer_id = violations.check("customer_id", CustomerId::parse(customer_id));
        let currency = violations.check("currency", Currency::parse(currency));
        let item_count = items.len();
        if item_count == 0 {
            violations.add("items", "an order needs at least one item");
        } else if item_count > MAX_ITEMS {
            violations.add(
                "items",
                format!("an order may have at most {MAX_ITEMS} items, has {item_count}"),
            );
        }
        let mut parsed = Vec::with_capacity(item_count.min(MAX_ITEMS));
        let mut total: Option<i64> = Some(0);
        for (index, raw) in items.enumerate() {
            let sku = violations.check(format!("items[{index}].sku"), Sku::parse(raw.sku));
            if !(1..=MAX_QUANTITY).contains(&raw.quantity) {
                violations.add(
                    format!("items[{index}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}, got {}", raw.quantity),
                );
            }
            if raw.unit_price_cents < 0 {
                violations.add(
                    format!("items[{index}].unit_price_cents"),
                    format!("must not be negative, got {}", raw.unit_price_cents),
                );
            }
            total = total.and_then(|sum| {
                raw.unit_price_cents
                    .checked_mul(i64::from(raw.quantity))
                    .and_then(|line| sum.checked_add(line))
            });
            if let Some(sku) = sku {
                parsed.push(LineItem {
                    sku,
                    quantity: raw.quantity,
                    unit_price_cents: raw.unit_price_cents,
                });
            }
        }
        if total.is_none() {
            violations.add(
                "items",
                "the order total overflows a 64-bit number of cents",
            );
        }
        Some(NewOrder {
            customer_id: customer_id?,
            items: parsed,
            currency: currency?,
            total_cents: total?,
        })
    }

    /// The fingerprint of this order as a request: equal orders, equal fingerprints.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut fingerprinter = Fingerprinter::default();
        fingerprinter
            .part(b"CreateOrder")
            .part(self.customer_id.as_str().as_bytes())
            .part(self.currency.as_str().as_bytes());
        for item in &self.items {
            fingerprinter
                .part(item.sku.as_str().as_bytes())
                .part(&item.quantity.to_be_bytes())
                .part(&item.unit_price_cents.to_be_bytes());
        }
        fingerprinter.finish()
    }

    /// The order this becomes when stored under `id` at `now`.
    pub fn into_order(self, id: OrderId, now: UnixMicros) -> Order {
        Order {
            id,
            customer_id: self.customer_id,
            items: self.items,
            currency: self.currency,
            total_cents: self.total_cents,
            status: OrderStatus::Pending,
            version: 1,
            create_time: now,
            update_time: now,
        }
    }
}

/// Create an order (one write of the store).
#[derive(Debug, Clone)]
pub struct CreateOrder {
    /// The id the order gets if this write takes effect (a replay returns the first id instead).
    pub order_id: OrderId,
    /// The validated order.
    pub order: NewOrder,
}

/// Move an order to another status (one write of the store).
#[derive(Debug, Clone)]
pub struct UpdateStatus {
    /// The order to change.
    pub order_id: OrderId,
    /// The status asked for.
    pub target: OrderStatus,
    /// `Some(v)`: only if the order is at version `v`.
    pub expected_version: Option<i64>,
    /// Free text kept with the event.
    pub reason: String,
}

impl UpdateStatus {
    /// The fingerprint of this change as a request.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&[
            b"UpdateOrderStatus",
            self.order_id.as_str().as_bytes(),
            &self.target.number().to_be_bytes(),
            &self.expected_version.unwrap_or(0).to_be_bytes(),
            self.reason.as_bytes(),
        ])
    }
}

/// A change the store applies in one transaction, with its event and idempotency record.
#[derive(Debug, Clone)]
pub struct Write {
    /// Who asks; idempotency keys are scoped to it.
    pub principal: Principal,
    /// The caller's idempotency key, if any.
    pub request_id: Option<RequestId>,
    /// What to do.
    pub change: Change,
    /// The time the change is stamped with.
    pub now: UnixMicros,
    /// The writer's W3C `traceparent` (the span of the call that made the change), kept with
    /// the event so work it causes later (a webhook delivery) can link to that trace.
    pub trace_parent: Option<String>,
}

/// The two kinds of change.
#[derive(Debug, Clone)]
pub enum Change {
    /// See [`CreateOrder`].
    Create(CreateOrder),
    /// See [`UpdateStatus`].
    UpdateStatus(UpdateStatus),
}

impl Change {
    /// The free text kept with the change's event (empty for a creation).
    pub fn reason(&self) -> &str {
        match self {
            Change::Create(_) => "",
            Change::UpdateStatus(update) => &update.reason,
        }
    }
}

impl Write {
    /// The request fingerprint stored with the idempotency key.
    pub fn fingerprint(&self) -> Fingerprint {
        match &self.change {
            Change::Create(create) => create.order.fingerprint(),
            Change::UpdateStatus(update) => update.fingerprint(),
        }
    }
}

/// What a write returned.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The order as the (first) call left it.
    pub order: Order,
    /// True when this is a replay of an earlier call with the same key: nothing new happened.
    pub replayed: bool,
}

/// One change of one order, as stored in the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    /// Position in the global event log; strictly increasing.
    pub sequence: u64,
    /// The order right after the change.
    pub order: Order,
    /// The status before; `None` for the creation.
    pub previous_status: Option<OrderStatus>,
    /// When the change happened.
    pub event_time: UnixMicros,
    /// The W3C `traceparent` of the write that produced it, when it was traced.
    pub trace_parent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: u32, unit_price_cents: i64) -> RawLineItem<'_> {
        RawLineItem {
            sku,
            quantity,
            unit_price_cents,
        }
    }

    fn parse(items: &[RawLineItem<'_>]) -> Result<NewOrder, Error> {
        let mut violations = Violations::default();
        let order = NewOrder::parse("c-1", items.iter().copied(), "EUR", &mut violations);
        violations.into_result(|| order.expect("no violations means an order"))
    }

    /// Fingerprints are stored with idempotency records and compared with the fingerprints of
    /// later requests: this one is SHA-256 over the length-prefixed parts `CreateOrder`, `c-1`,
    /// `EUR`, then per item its SKU, quantity (u32) and unit price (i64), big-endian.
    #[test]
    fn an_orders_fingerprint_is_pinned() {
        let order = parse(&[item("A", 2, 150), item("B", 1, 1)]).unwrap();
        assert_eq!(
            hex::encode(order.fingerprint().0),
            "038f28c29c06ace1626573bda629357f97267840e7f708cea614d0e656b8f81d"
        );
    }

    #[test]
    fn computes_the_total_from_the_items() {
        let order = parse(&[item("A", 2, 150), item("B", 1, 1)]).unwrap();
        assert_eq!(order.total_cents, 301);
    }

    #[test]
    fn an_overflowing_total_is_a_violation() {
        let err = parse(&[item("A", 2, i64::MAX / 2 + 1)]).unwrap_err();
        let Error::Invalid(violations) = err else {
            panic!("expected Invalid")
        };
        assert_eq!(violations[0].field, "items");
    }

    #[test]
    fn same_status_is_a_no_op_and_a_stale_version_is_refused_first() {
        let order = parse(&[item("A", 1, 1)])
            .unwrap()
            .into_order(OrderId::generate(), UnixMicros(10));
        assert!(
            order
                .change_status(OrderStatus::Pending, None, UnixMicros(11))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            order.change_status(OrderStatus::Pending, Some(7), UnixMicros(11)),
            Err(Error::VersionMismatch {
                expected: 7,
                actual: 1
            })
        ));
        let paid = order
            .change_status(OrderStatus::Paid, Some(1), UnixMicros(12))
            .unwrap()
            .unwrap();
        assert_eq!((paid.version, paid.update_time), (2, UnixMicros(12)));
    }
}
