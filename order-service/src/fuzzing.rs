//! Entry points for the fuzz targets in `fuzz/` and for the regression test that replays what
//! they found (`tests/it/fuzz_regressions.rs`): each takes raw bytes, runs them through the code
//! that faces the network (the same functions the handlers and the gate call, never a copy) and
//! panics when a property of that code does not hold. Not part of the service's API.

use crate::domain::{Error, ListQuery, MAX_PAGE_SIZE, OrderId, OrderStatus, UnixMicros};
use crate::grpc::auth::{TokenSet, TokensFileError};
use crate::grpc::convert::{self, CreateRequest, UpdateRequest};
use crate::grpc::deadline::CallDeadlines;
use orders_proto::v1 as pb;
use prost::Message;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

/// A fuzz target: the name of its folder of regressions, and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// The fuzz targets of order-service.
pub const TARGETS: [Target; 4] = [
    ("orders_request", orders_request),
    ("page_token", page_token),
    ("tokens_file", tokens_file),
    ("grpc_timeout", grpc_timeout),
];

/// The first byte picks a request message of `orders.v1`, the rest is its protobuf encoding.
/// The message is decoded as tonic's codec decodes it and validated as its handler validates it.
/// Properties: validation never panics; a refusal lists at least one violation, each on a field
/// path of that message (an item's index within the items sent) with a description, and becomes
/// INVALID_ARGUMENT with the same fields in its `BadRequest`; an accepted request keeps what
/// was sent.
pub fn orders_request(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            let Ok(request) = pb::CreateOrderRequest::decode(bytes) else {
                return;
            };
            let item_count = request.items.len();
            let paths = |field: &str| {
                matches!(field, "request_id" | "customer_id" | "currency" | "items")
                    || item_path(field).is_some_and(|(index, leaf)| {
                        index < item_count
                            && matches!(leaf, "sku" | "quantity" | "unit_price_cents")
                    })
            };
            match CreateRequest::try_from(request.clone()) {
                Ok(create) => {
                    assert_eq!(
                        create.request_id.as_ref().map_or("", |id| id.as_str()),
                        request.request_id
                    );
                    let order = create
                        .order
                        .into_order(OrderId::generate(), UnixMicros::now());
                    assert_eq!(order.customer_id.as_str(), request.customer_id);
                    assert_eq!(order.currency.as_str(), request.currency);
                    assert_eq!(order.items.len(), item_count);
                    let total: i128 = request
                        .items
                        .iter()
                        .map(|item| i128::from(item.quantity) * i128::from(item.unit_price_cents))
                        .sum();
                    assert_eq!(i128::from(order.total_cents), total);
                    assert!(order.total_cents >= 0);
                    let reply = pb::Order::from(order);
                    assert_eq!(reply.items, request.items);
                }
                Err(error) => refused(error, paths),
            }
        }
        1 => {
            let Ok(request) = pb::GetOrderRequest::decode(bytes) else {
                return;
            };
            match convert::order_id(&request.order_id) {
                Ok(id) => assert_eq!(id.as_str(), request.order_id),
                Err(error) => refused(error, |field| field == "order_id"),
            }
        }
        2 => {
            let Ok(request) = pb::ListOrdersRequest::decode(bytes) else {
                return;
            };
            match ListQuery::try_from(request.clone()) {
                Ok(query) => {
                    assert!((1..=MAX_PAGE_SIZE).contains(&query.page_size));
                    assert!(query.after >= 0);
                    if request.page_token.is_empty() {
                        assert_eq!(query.after, 0);
                    }
                    assert_eq!(query.status.map_or(0, OrderStatus::number), request.status);
                }
                Err(error) => refused(error, |field| {
                    matches!(field, "page_size" | "page_token" | "status" | "customer_id")
                }),
            }
        }
        3 => {
            let Ok(request) = pb::UpdateOrderStatusRequest::decode(bytes) else {
                return;
            };
            match UpdateRequest::try_from(request.clone()) {
                Ok(update) => {
                    assert_eq!(
                        update.request_id.as_ref().map_or("", |id| id.as_str()),
                        request.request_id
                    );
                    let update = update.update;
                    assert_eq!(update.order_id.as_str(), request.order_id);
                    assert_eq!(update.target.number(), request.status);
                    assert_eq!(
                        update.expected_version.unwrap_or(0),
                        request.expected_version
                    );
                    assert_eq!(update.reason, request.reason);
                }
                Err(error) => refused(error, |field| {
                    matches!(
                        field,
                        "request_id" | "order_id" | "status" | "expected_version" | "reason"
                    )
                }),
            }
        }
        _ => {
            let Ok(request) = pb::WatchOrdersRequest::decode(bytes) else {
                return;
            };
            match convert::watch_filter(&request.order_id) {
                Ok(filter) => {
                    assert_eq!(
                        filter.as_ref().map_or("", OrderId::as_str),
                        request.order_id
                    )
                }
                Err(error) => refused(error, |field| field == "order_id"),
            }
        }
    }
}

/// `items[INDEX].LEAF` split into its index and leaf.
fn item_path(field: &str) -> Option<(usize, &str)> {
    let rest = field.strip_prefix("items[")?;
    let (index, leaf) = rest.split_once("].")?;
    Some((index.parse().ok()?, leaf))
}

/// Checks a validation refusal: some violations, each on a known path with a description, and
/// the same list in the `BadRequest` of the status the handler answers with.
fn refused(error: Error, known_path: impl Fn(&str) -> bool) {
    let Error::Invalid(violations) = &error else {
        panic!("validation failed with something else than Invalid: {error:?}");
    };
    assert!(!violations.is_empty(), "a refusal without a violation");
    for violation in violations {
        assert!(
            known_path(&violation.field),
            "no such field path: {:?}",
            violation.field
        );
        assert!(!violation.description.is_empty(), "{violation:?}");
    }
    let fields: Vec<String> = violations.iter().map(|v| v.field.clone()).collect();
    let status = tonic::Status::from(error);
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("a BadRequest detail");
    let sent: Vec<String> = bad_request
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(sent, fields);
}

/// The first byte picks the filters (status and, from the next bytes, a customer), the rest is
/// a page token. Properties: a token this service issues decodes to the position it was issued
/// for, only under its own filters; a token that decodes is the very token the service would
/// issue for that position (one position, one token).
pub fn page_token(data: &[u8]) {
    let Some((&filters, rest)) = data.split_first() else {
        return;
    };
    let status = i32::from(filters & 0x7);
    let (customer, rest) = rest.split_at(usize::from(filters >> 3).min(rest.len()));
    let Ok(customer) = std::str::from_utf8(customer) else {
        return;
    };
    let Ok(query) = ListQuery::parse(10, "", status, customer) else {
        return;
    };
    // The first eight bytes after the customer also serve as a position to issue a token for.
    let after = rest.get(..8).map_or(0, |bytes| {
        i64::from_le_bytes(bytes.try_into().expect("8 bytes")) & i64::MAX
    });
    let issued = query.page_token(after);
    let again = ListQuery::parse(10, &issued, status, customer).expect("an issued token decodes");
    assert_eq!(again.after, after);
    let other_status = (status + 1) % 8;
    if let Ok(other) = ListQuery::parse(10, &issued, other_status, customer) {
        panic!(
            "a token for status {status} was accepted for status {other_status}: {:?}",
            other.after
        );
    }
    let Ok(token) = std::str::from_utf8(rest) else {
        return;
    };
    match ListQuery::parse(10, token, status, customer) {
        Ok(decoded) if !token.is_empty() => {
            assert_eq!(
                decoded.page_token(decoded.after),
                token,
                "a token decoded to position {} that the service issues differently",
                decoded.after
            );
        }
        Ok(_) => {}
        Err(error) => refused(error, |field| field == "page_token"),
    }
}

/// The first byte picks the form: even, the rest is the text of a tokens file; odd, the rest
/// describes entries (scopes, principal, token) that are written as a tokens file. Properties:
/// parsing never panics and a refused entry is named by its 1-based position; a file of valid
/// entries loads, and each token then authenticates as its principal with its scopes.
pub fn tokens_file(data: &[u8]) {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    if form % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        match TokenSet::parse(text, "fuzz.toml") {
            Ok(_) => {}
            Err(TokensFileError::Entry { index, .. }) => assert!(index >= 1),
            Err(error) => assert!(!error.to_string().is_empty()),
        }
        return;
    }
    struct Entry {
        principal: String,
        token: String,
        read: bool,
        write: bool,
    }
    let mut entries = Vec::new();
    let mut input = rest;
    while let [flags, principal_len, token_len, tail @ ..] = input {
        let (principal, tail) = tail.split_at(usize::from(*principal_len % 16).min(tail.len()));
        let (token, tail) = tail.split_at(usize::from(*token_len % 16).min(tail.len()));
        input = tail;
        // Tokens from the characters of real bearer tokens, so that each is one header value.
        const ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
        entries.push(Entry {
            principal: String::from_utf8_lossy(principal).into_owned(),
            token: token
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
                .collect(),
            read: flags & 1 != 0,
            write: flags & 2 != 0,
        });
    }
    let mut text = String::new();
    for entry in &entries {
        let mut scopes = Vec::new();
        if entry.read {
            scopes.push("\"orders.read\"");
        }
        if entry.write {
            scopes.push("\"orders.write\"");
        }
        text.push_str(&format!(
            "[[token]]\nprincipal = {}\nscopes = [{}]\nsha256 = \"{}\"\n",
            toml::Value::String(entry.principal.clone()),
            scopes.join(", "),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                entry.token.as_bytes()
            )),
        ));
    }
    let first_bad = entries.iter().enumerate().position(|(index, entry)| {
        entry.principal.trim().is_empty()
            || !(entry.read || entry.write)
            || entries[..index].iter().any(|e| e.token == entry.token)
    });
    let parsed = TokenSet::parse(&text, "fuzz.toml");
    let tokens = match (parsed, first_bad) {
        (Ok(tokens), None) if !entries.is_empty() => tokens,
        (Err(TokensFileError::Empty { .. }), None) if entries.is_empty() => return,
        (Err(TokensFileError::Entry { index, .. }), Some(bad)) => {
            assert_eq!(index, bad + 1, "the refused entry is named by its position");
            return;
        }
        (parsed, first_bad) => panic!(
            "tokens file of {} entries (first invalid: {first_bad:?}) gave {:?}\n{text}",
            entries.len(),
            parsed.map(|_| "a token set")
        ),
    };
    for entry in &entries {
        if entry.token.is_empty() {
            continue;
        }
        let header = http::HeaderValue::from_str(&format!("Bearer {}", entry.token))
            .expect("tokens of header characters");
        for (method, allowed) in [("GetOrder", entry.read), ("CreateOrder", entry.write)] {
            match tokens.authorize(Some(&header), method) {
                Ok(principal) => {
                    assert!(allowed, "{method} allowed without its scope");
                    assert_eq!(principal.as_str(), entry.principal);
                }
                Err(status) => {
                    assert!(!allowed, "{method} refused with its scope: {status:?}");
                    assert_eq!(status.code(), Code::PermissionDenied);
                }
            }
        }
    }
}

/// The longest deadline a `grpc-timeout` can state: eight digits of hours.
pub const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(99_999_999 * 3600);

/// The bytes are a `grpc-timeout` value. Properties: a value is accepted exactly when it is one
/// to eight digits and a unit of `H M S m u n`, its duration is that amount of that unit (so never
/// more than [`MAX_GRPC_TIMEOUT`]), and a call's deadlines never overflow and never pass the
/// server's maximum.
pub fn grpc_timeout(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = orders_proto::grpc_timeout::parse(value);
    let well_formed = value.len() >= 2
        && value.len() <= 9
        && value.as_bytes()[..value.len() - 1]
            .iter()
            .all(u8::is_ascii_digit);
    let unit_nanos: Option<u128> = match value.as_bytes().last() {
        Some(b'H') => Some(3_600_000_000_000),
        Some(b'M') => Some(60_000_000_000),
        Some(b'S') => Some(1_000_000_000),
        Some(b'm') => Some(1_000_000),
        Some(b'u') => Some(1_000),
        Some(b'n') => Some(1),
        _ => None,
    };
    match (parsed, unit_nanos) {
        (Some(duration), Some(unit)) if well_formed => {
            let amount: u128 = value[..value.len() - 1].parse().expect("digits");
            assert_eq!(duration.as_nanos(), amount * unit, "{value:?}");
            assert!(duration <= MAX_GRPC_TIMEOUT, "{value:?} gave {duration:?}");
        }
        (None, unit) if !well_formed || unit.is_none() => {}
        (parsed, _) => panic!("{value:?} parsed as {parsed:?}"),
    }
    if let Ok(header) = http::HeaderValue::from_str(value) {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", header);
        let max = Duration::from_secs(30);
        let deadlines = CallDeadlines::new(&headers, max);
        let after = tokio::time::Instant::now();
        assert!(deadlines.work <= after + parsed.map_or(max, |asked| asked.min(max)));
    }
}
