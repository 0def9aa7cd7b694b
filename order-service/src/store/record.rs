//! The storage format of orders kept inside stored rows — an event's snapshot, an idempotency
//! record's first response, an order's line items — with a layout of its own rather than the
//! domain types' serde form, so renaming a domain type or field cannot corrupt stored data. Every
//! backend writes and reads these texts. The layout is the one the first SQLite schema wrote;
//! the tests pin it with literal stored text, so a change to it shows as a failing test, and an
//! incompatible change needs a new layout that still reads this one.

use crate::domain::{Currency, CustomerId, LineItem, Order, OrderId, OrderStatus, Sku, UnixMicros};
use serde::{Deserialize, Serialize};

/// A stored text that does not decode: the row is corrupt or was written by something else.
#[derive(Debug, thiserror::Error)]
#[error("stored {what} does not decode: {problem}")]
pub struct RecordError {
    what: &'static str,
    problem: String,
}

impl RecordError {
    fn new(what: &'static str, problem: impl std::fmt::Display) -> Self {
        RecordError {
            what,
            problem: problem.to_string(),
        }
    }
}

/// The stored layout, read back. Written from [`StoredOrderRef`], which has the same fields in
/// the same order but borrows them from the order (no copy of any string to encode one).
#[derive(Deserialize)]
struct StoredOrder {
    id: String,
    customer_id: String,
    items: Vec<StoredItem>,
    currency: String,
    total_cents: i64,
    status: StoredStatus,
    version: i64,
    /// Microseconds since the Unix epoch.
    create_time: i64,
    /// Microseconds since the Unix epoch.
    update_time: i64,
}

#[derive(Deserialize)]
struct StoredItem {
    sku: String,
    quantity: u32,
    unit_price_cents: i64,
}

/// [`StoredOrder`] as written: the same fields in the same order, borrowed.
#[derive(Serialize)]
struct StoredOrderRef<'a> {
    id: &'a str,
    customer_id: &'a str,
    items: StoredItemsRef<'a>,
    currency: &'a str,
    total_cents: i64,
    status: StoredStatus,
    version: i64,
    create_time: i64,
    update_time: i64,
}

/// [`StoredItem`]s as written, borrowed from the order's line items.
struct StoredItemsRef<'a>(&'a [LineItem]);

/// [`StoredItem`] as written: the same fields in the same order, borrowed.
#[derive(Serialize)]
struct StoredItemRef<'a> {
    sku: &'a str,
    quantity: u32,
    unit_price_cents: i64,
}

impl Serialize for StoredItemsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|item| StoredItemRef {
            sku: item.sku.as_str(),
            quantity: item.quantity,
            unit_price_cents: item.unit_price_cents,
        }))
    }
}

#[derive(Serialize, Deserialize)]
enum StoredStatus {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl From<OrderStatus> for StoredStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => StoredStatus::Pending,
            OrderStatus::Paid => StoredStatus::Paid,
            OrderStatus::Shipped => StoredStatus::Shipped,
            OrderStatus::Delivered => StoredStatus::Delivered,
            OrderStatus::Cancelled => StoredStatus::Cancelled,
        }
    }
}

impl From<StoredStatus> for OrderStatus {
    fn from(status: StoredStatus) -> Self {
        match status {
            StoredStatus::Pending => OrderStatus::Pending,
            StoredStatus::Paid => OrderStatus::Paid,
            StoredStatus::Shipped => OrderStatus::Shipped,
            StoredStatus::Delivered => OrderStatus::Delivered,
            StoredStatus::Cancelled => OrderStatus::Cancelled,
        }
    }
}

fn domain_items(items: Vec<StoredItem>) -> Result<Vec<LineItem>, RecordError> {
    items
        .into_iter()
        .map(|item| {
            Ok(LineItem {
                sku: Sku::parse(&item.sku).map_err(|p| RecordError::new("line item sku", p))?,
                quantity: item.quantity,
                unit_price_cents: item.unit_price_cents,
            })
        })
        .collect()
}

/// The stored text of an order.
pub fn encode_order(order: &Order) -> String {
    let stored = StoredOrderRef {
        id: order.id.as_str(),
        customer_id: order.customer_id.as_str(),
        items: StoredItemsRef(&order.items),
        currency: order.currency.as_str(),
        total_cents: order.total_cents,
        status: order.status.into(),
        version: order.version,
        create_time: order.create_time.0,
        update_time: order.update_time.0,
    };
    serde_json::to_string(&stored).expect("a stored order always encodes")
}

/// An order from its stored text.
pub fn decode_order(text: &str) -> Result<Order, RecordError> {
    let stored: StoredOrder =
        serde_json::from_str(text).map_err(|e| RecordError::new("order", e))?;
    Ok(Order {
        id: OrderId::parse(&stored.id).map_err(|p| RecordError::new("order id", p))?,
        customer_id: CustomerId::parse(&stored.customer_id)
            .map_err(|p| RecordError::new("customer id", p))?,
        items: domain_items(stored.items)?,
        currency: Currency::parse(&stored.currency).map_err(|p| RecordError::new("currency", p))?,
        total_cents: stored.total_cents,
        status: stored.status.into(),
        version: stored.version,
        create_time: UnixMicros(stored.create_time),
        update_time: UnixMicros(stored.update_time),
    })
}

/// The stored text of an order's line items.
pub fn encode_items(items: &[LineItem]) -> String {
    serde_json::to_string(&StoredItemsRef(items)).expect("stored line items always encode")
}

/// Line items from their stored text.
pub fn decode_items(text: &str) -> Result<Vec<LineItem>, RecordError> {
    let stored: Vec<StoredItem> =
        serde_json::from_str(text).map_err(|e| RecordError::new("line items", e))?;
    domain_items(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exactly what the first SQLite schema stored for an order (written by the service before
    /// this module existed): it must keep decoding, and encoding must keep producing it.
    const STORED_ORDER: &str = r#"{"id":"ord_0199","customer_id":"c-1","items":[{"sku":"A-1","quantity":2,"unit_price_cents":150},{"sku":"B","quantity":1,"unit_price_cents":0}],"currency":"EUR","total_cents":300,"status":"Shipped","version":3,"create_time":1700000000000000,"update_time":1700000000500000}"#;

    #[test]
    fn the_stored_layout_is_pinned() {
        let order = decode_order(STORED_ORDER).unwrap();
        assert_eq!(order.id.as_str(), "ord_0199");
        assert_eq!(order.status, OrderStatus::Shipped);
        assert_eq!(order.items[0].sku.as_str(), "A-1");
        assert_eq!(order.update_time, UnixMicros(1_700_000_000_500_000));
        assert_eq!(encode_order(&order), STORED_ORDER);
        let items = r#"[{"sku":"A-1","quantity":2,"unit_price_cents":150},{"sku":"B","quantity":1,"unit_price_cents":0}]"#;
        assert_eq!(decode_items(items).unwrap(), order.items);
        assert_eq!(encode_items(&order.items), items);
    }

    #[test]
    fn corrupt_text_is_an_error_that_says_what() {
        let error = decode_order(r#"{"id":"x"}"#).unwrap_err().to_string();
        assert!(error.starts_with("stored order does not decode"), "{error}");
        let error = decode_order(&STORED_ORDER.replace("\"EUR\"", "\"eur\""))
            .unwrap_err()
            .to_string();
        assert!(error.contains("currency"), "{error}");
    }
}
