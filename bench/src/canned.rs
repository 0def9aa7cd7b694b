//! The one order shape every benchmark call creates and reads, shared by the load generator and
//! the bare server so that both servers decode and encode messages of the same size.

use orders_proto::v1 as pb;
use orders_proto::wkt::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Customer of every benchmark order.
pub const CUSTOMER_ID: &str = "bench-customer-0001";
/// Currency of every benchmark order.
pub const CURRENCY: &str = "EUR";

/// The line items of every benchmark order: two lines, like a small real basket.
pub fn line_items() -> Vec<pb::LineItem> {
    vec![
        pb::LineItem {
            sku: "SKU-COFFEE-BEANS-1KG".to_owned(),
            quantity: 2,
            unit_price_cents: 1_899,
        },
        pb::LineItem {
            sku: "SKU-FILTER-PAPERS-100".to_owned(),
            quantity: 1,
            unit_price_cents: 349,
        },
    ]
}

/// What the server must compute as `total_cents` for [`line_items`].
pub fn expected_total_cents() -> i64 {
    total_cents(&line_items())
}

/// Sum of quantity × unit price, as the service computes it.
pub fn total_cents(items: &[pb::LineItem]) -> i64 {
    items
        .iter()
        .map(|item| i64::from(item.quantity) * item.unit_price_cents)
        .sum()
}

/// A CreateOrder request for the benchmark order with the idempotency key `request_id`.
pub fn create_request(request_id: String) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        request_id,
        customer_id: CUSTOMER_ID.to_owned(),
        items: line_items(),
        currency: CURRENCY.to_owned(),
    }
}

/// A freshly created (PENDING, version 1) order with the benchmark shape, stamped now.
pub fn pending_order(order_id: String, items: Vec<pb::LineItem>) -> pb::Order {
    let now = now();
    pb::Order {
        order_id,
        customer_id: CUSTOMER_ID.to_owned(),
        total_cents: total_cents(&items),
        items,
        currency: CURRENCY.to_owned(),
        status: pb::OrderStatus::Pending as i32,
        version: 1,
        create_time: Some(now),
        update_time: Some(now),
    }
}

fn now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}
