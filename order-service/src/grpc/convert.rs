//! Conversions between wire messages and domain values: requests are validated into domain
//! types (every violation reported together), domain values are turned back into messages.

use crate::domain::{
    Error, ListQuery, MAX_REASON_CHARS, NewOrder, Order, OrderEvent, OrderId, OrderStatus,
    RawLineItem, RequestId, UnixMicros, UpdateStatus, Violations,
};
use orders_proto::v1 as pb;
use orders_proto::wkt::Timestamp;

/// A validated `CreateOrderRequest`.
pub(crate) struct CreateRequest {
    pub(crate) request_id: Option<RequestId>,
    pub(crate) order: NewOrder,
}

impl TryFrom<pb::CreateOrderRequest> for CreateRequest {
    type Error = Error;

    fn try_from(request: pb::CreateOrderRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let request_id = optional_request_id(&request.request_id, &mut violations);
        let order = NewOrder::parse(
            &request.customer_id,
            request.items.iter().map(|item| RawLineItem {
                sku: &item.sku,
                quantity: item.quantity,
                unit_price_cents: item.unit_price_cents,
            }),
            &request.currency,
            &mut violations,
        );
        violations.into_result(|| CreateRequest {
            request_id: request_id.flatten(),
            order: order.expect("an order is parsed when nothing is violated"),
        })
    }
}

/// A validated `UpdateOrderStatusRequest`.
pub(crate) struct UpdateRequest {
    pub(crate) request_id: Option<RequestId>,
    pub(crate) update: UpdateStatus,
}

impl TryFrom<pb::UpdateOrderStatusRequest> for UpdateRequest {
    type Error = Error;

    fn try_from(request: pb::UpdateOrderStatusRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let request_id = optional_request_id(&request.request_id, &mut violations);
        let order_id = violations.check("order_id", OrderId::parse(&request.order_id));
        let target = violations.check(
            "status",
            OrderStatus::from_number(request.status).ok_or_else(|| match request.status {
                0 => "must name the target status".to_owned(),
                other => format!("unknown order status {other}"),
            }),
        );
        let expected_version = match request.expected_version {
            0 => None,
            v if v < 0 => {
                violations.add("expected_version", format!("must not be negative, got {v}"));
                None
            }
            v => Some(v),
        };
        let reason_chars = request.reason.chars().count();
        if reason_chars > MAX_REASON_CHARS {
            violations.add(
                "reason",
                format!("must have at most {MAX_REASON_CHARS} characters, has {reason_chars}"),
            );
        }
        violations.into_result(|| UpdateRequest {
            request_id: request_id.flatten(),
            update: UpdateStatus {
                order_id: order_id.expect("checked"),
                target: target.expect("checked"),
                expected_version,
                reason: request.reason,
            },
        })
    }
}

/// Validates the order id of a `GetOrderRequest` or `WatchOrdersRequest`.
pub(crate) fn order_id(value: &str) -> Result<OrderId, Error> {
    OrderId::parse(value).map_err(|description| Error::invalid("order_id", description))
}

/// The order filter of a `WatchOrdersRequest`: `None` (every order) when `order_id` is empty.
pub(crate) fn watch_filter(order_id: &str) -> Result<Option<OrderId>, Error> {
    match order_id {
        "" => Ok(None),
        id => self::order_id(id).map(Some),
    }
}

impl TryFrom<pb::ListOrdersRequest> for ListQuery {
    type Error = Error;

    fn try_from(request: pb::ListOrdersRequest) -> Result<Self, Error> {
        ListQuery::parse(
            request.page_size,
            &request.page_token,
            request.status,
            &request.customer_id,
        )
    }
}

/// `None` when absent, `Some(None)` when present but invalid (already recorded).
fn optional_request_id(value: &str, violations: &mut Violations) -> Option<Option<RequestId>> {
    if value.is_empty() {
        Some(None)
    } else {
        violations
            .check("request_id", RequestId::parse(value))
            .map(Some)
    }
}

pub(crate) fn timestamp(time: UnixMicros) -> Timestamp {
    let (seconds, nanos) = time.seconds_and_nanos();
    Timestamp { seconds, nanos }
}

fn status_number(status: Option<OrderStatus>) -> i32 {
    status.map_or(pb::OrderStatus::Unspecified as i32, OrderStatus::number)
}

impl From<Order> for pb::Order {
    fn from(order: Order) -> pb::Order {
        pb::Order {
            order_id: order.id.as_str().to_owned(),
            customer_id: order.customer_id.as_str().to_owned(),
            items: order
                .items
                .into_iter()
                .map(|item| pb::LineItem {
                    sku: item.sku.as_str().to_owned(),
                    quantity: item.quantity,
                    unit_price_cents: item.unit_price_cents,
                })
                .collect(),
            currency: order.currency.as_str().to_owned(),
            total_cents: order.total_cents,
            status: order.status.number(),
            version: order.version,
            create_time: Some(timestamp(order.create_time)),
            update_time: Some(timestamp(order.update_time)),
        }
    }
}

impl From<&OrderEvent> for pb::OrderEvent {
    fn from(event: &OrderEvent) -> pb::OrderEvent {
        pb::OrderEvent {
            sequence: event.sequence,
            order: Some(event.order.clone().into()),
            previous_status: status_number(event.previous_status),
            event_time: Some(timestamp(event.event_time)),
        }
    }
}
