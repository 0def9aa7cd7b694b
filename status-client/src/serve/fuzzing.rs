//! Entry points for the fuzz targets in `fuzz/` and for the regression test that replays what
//! they found (`tests/it/fuzz_regressions.rs`): each takes raw bytes, runs them through the
//! gateway's own parsing of a request (the functions its handlers call, never a copy) and panics
//! when a property of that parsing does not hold. Not part of the crate's API.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use orders_proto::v1::{CreateOrderRequest, UpdateOrderStatusRequest};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::errors::ApiError;
use super::events::start_after;
use super::routes::{create_request, update_request};

/// A fuzz target: the name of its folder of regressions, and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// The fuzz targets of the gateway.
pub const TARGETS: [Target; 2] = [
    ("gateway_body", gateway_body),
    ("last_event_id", last_event_id),
];

/// The first byte picks the route (bit 0: `POST /v1/orders` or `POST /v1/orders/{id}/status`)
/// and whether an `Idempotency-Key` header is sent (bit 1); the next byte is the length of that
/// key (then of the path's order id, for a status update), taken from the bytes after it; the
/// rest is the body. Properties: parsing never panics; a refusal is a 400 with a JSON error body
/// and the reason of what was wrong; an accepted body is the request order-service receives,
/// with the header's key (a different key in the body is refused), the path's order id (a
/// different one in the body is refused), the same message after protobuf encoding and the
/// same request when printed back in the proto3 JSON mapping.
pub fn gateway_body(data: &[u8]) {
    let [route, length, rest @ ..] = data else {
        return;
    };
    let (key, rest) = rest.split_at(usize::from(length % 64).min(rest.len()));
    // As `CallContext` reads the header: its value as text, refused when it is not (so never
    // reaching the body).
    let key = match (route & 2 != 0, HeaderValue::from_bytes(key)) {
        (false, _) => None,
        (true, Ok(value)) => match value.to_str() {
            Ok(text) => Some(text.to_owned()),
            Err(_) => return,
        },
        (true, Err(_)) => return,
    };
    if route & 1 == 0 {
        let body = Bytes::copy_from_slice(rest);
        let sent = parse::<CreateOrderRequest>(rest);
        match create_request(Ok(body), key.clone()) {
            Ok(request) => {
                let sent = sent.expect("an accepted body parses");
                assert_eq!(request.request_id, key.unwrap_or(sent.request_id));
                round_trips(&request);
            }
            Err(error) => {
                let reason = if sent.is_none() {
                    "INVALID_JSON"
                } else {
                    "IDEMPOTENCY_KEY_MISMATCH"
                };
                bad_request(error, reason);
            }
        }
    } else {
        let (id, rest) = rest.split_at(usize::from(length / 64).min(rest.len()));
        let Ok(id) = std::str::from_utf8(id) else {
            return;
        };
        let body = Bytes::copy_from_slice(rest);
        let sent = parse::<UpdateOrderStatusRequest>(rest);
        match update_request(id.to_owned(), Ok(body), key.clone()) {
            Ok(request) => {
                let sent = sent.expect("an accepted body parses");
                assert_eq!(request.order_id, id);
                assert!(sent.order_id.is_empty() || sent.order_id == id);
                assert_eq!(request.request_id, key.unwrap_or(sent.request_id));
                round_trips(&request);
            }
            Err(error) => {
                let reason = match sent {
                    None => "INVALID_JSON",
                    Some(sent) if !sent.order_id.is_empty() && sent.order_id != id => {
                        "ORDER_ID_MISMATCH"
                    }
                    Some(_) => "IDEMPOTENCY_KEY_MISMATCH",
                };
                bad_request(error, reason);
            }
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

/// What order-service receives is the request itself, and printed in the proto3 JSON mapping
/// the request reads back the same.
fn round_trips<T>(request: &T)
where
    T: Message + Default + PartialEq + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let wire = request.encode_to_vec();
    assert_eq!(&T::decode(wire.as_slice()).expect("decodes"), request);
    let json = serde_json::to_string(request).expect("prints as JSON");
    let again: T = serde_json::from_str(&json).expect("its own JSON parses");
    assert_eq!(&again, request, "{json}");
}

/// A 400 with a JSON error body whose reason is `reason`.
fn bad_request(error: ApiError, reason: &str) {
    let body: serde_json::Value = serde_json::from_str(&error.to_json()).expect("a JSON body");
    assert_eq!(body["code"], "INVALID_ARGUMENT", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(error.into_response().status(), StatusCode::BAD_REQUEST);
}

/// The first byte says whether a `Last-Event-ID` header is sent (bit 0) and whether an
/// `afterSequence` query parameter is (bit 1); the next byte is the length of the header's
/// value, taken from the bytes after it; the rest is the parameter. Properties: parsing never
/// panics; the header wins over the parameter; absent or empty, the watch starts from now (0);
/// the header is accepted only as a decimal number (the `id:` the gateway writes for an event
/// reads back as that event's sequence), else refused with a 400 naming the header, and a bad
/// parameter with a 400 naming the query.
pub fn last_event_id(data: &[u8]) {
    let [flags, length, rest @ ..] = data else {
        return;
    };
    let (header, rest) = rest.split_at(usize::from(*length).min(rest.len()));
    let Ok(query) = std::str::from_utf8(rest) else {
        return;
    };
    let query = (flags & 2 != 0).then_some(query);
    let mut headers = HeaderMap::new();
    if flags & 1 != 0 {
        let Ok(value) = HeaderValue::from_bytes(header) else {
            return;
        };
        headers.insert("last-event-id", value);
    }
    let start = start_after(&headers, query);
    match headers.get("last-event-id") {
        Some(value) => {
            let without_query = start_after(&headers, None);
            assert_eq!(
                start.as_ref().ok(),
                without_query.as_ref().ok(),
                "the header wins"
            );
            match start {
                Ok(sequence) => {
                    let text = value.to_str().expect("an accepted value is text").trim();
                    let digits = text.strip_prefix('+').unwrap_or(text);
                    assert!(
                        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                        "{text:?} accepted as {sequence}"
                    );
                    let mut written = HeaderMap::new();
                    written.insert(
                        "last-event-id",
                        HeaderValue::from_str(&sequence.to_string()).expect("digits"),
                    );
                    assert_eq!(start_after(&written, None).ok(), Some(sequence));
                }
                Err(error) => bad_request(error, "INVALID_LAST_EVENT_ID"),
            }
        }
        None => match start {
            Ok(sequence) => {
                if query.is_none_or(|text| text.trim().is_empty()) {
                    assert_eq!(sequence, 0);
                } else {
                    assert_eq!(query.map(str::trim).map(str::parse), Some(Ok(sequence)));
                }
            }
            Err(error) => bad_request(error, "INVALID_QUERY"),
        },
    }
}
