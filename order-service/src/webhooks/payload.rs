//! What one delivery carries: the event type, the `webhook-id` (the same for every attempt of
//! one event to one endpoint: the receiver's dedupe key) and the JSON body
//! `{"type", "timestamp", "data"}` with the `OrderEvent` in the proto3 JSON mapping.

use crate::domain::OrderEvent;
use orders_proto::v1 as pb;

/// `order.created` or `order.status_changed`.
pub fn event_type(event: &OrderEvent) -> &'static str {
    if event.previous_status.is_none() {
        "order.created"
    } else {
        "order.status_changed"
    }
}

/// The `webhook-id` of `sequence` delivered to `endpoint_id`.
pub fn webhook_id(endpoint_id: &str, sequence: u64) -> String {
    format!("evt_{endpoint_id}_{sequence}")
}

#[derive(serde::Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: pb::OrderEvent,
}

/// The JSON body of `event`.
pub fn body(event: &OrderEvent) -> Vec<u8> {
    let data = pb::OrderEvent::from(event);
    let envelope = Envelope {
        kind: event_type(event),
        timestamp: rfc3339(event.event_time),
        data,
    };
    serde_json::to_vec(&envelope).expect("an order event encodes as JSON")
}

/// RFC 3339 in UTC with microseconds, the way the proto3 JSON mapping writes timestamps.
fn rfc3339(time: crate::domain::UnixMicros) -> String {
    let (seconds, nanos) = time.seconds_and_nanos();
    let ts = orders_proto::wkt::Timestamp { seconds, nanos };
    serde_json::to_value(ts)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}
