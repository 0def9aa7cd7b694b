//! What a request may bring, checked before anything is forwarded, and the JSON form of every
//! refusal that does not come from a handler.
//!
//! Header sizes matter beyond this service: order-service refuses a request whose header list
//! is larger than its HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`, and a much larger one makes it
//! close the whole connection, which the gateway shares between all its callers (and which
//! carried their event streams). So a request whose forwarded headers could not pass is
//! answered 431 here and never reaches order-service: one caller's headers only ever fail that
//! caller.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tonic::Code;

use super::errors::ApiError;

/// order-service's `SETTINGS_MAX_HEADER_LIST_SIZE`, 16 KiB (hyper's default for HTTP/2 servers,
/// which `order-service/src/server.rs` uses): keep the two equal.
pub const UPSTREAM_MAX_HEADER_LIST_BYTES: usize = 16 * 1024;

/// What the gateway's own headers of a gRPC call take of that list: the pseudo-headers,
/// `content-type`, `te`, `user-agent`, `grpc-timeout`, `grpc-accept-encoding` and its trace
/// context, with room to spare.
const OWN_HEADERS_RESERVE: usize = 2 * 1024;

/// The incoming headers whose values go on to order-service (the trace context is
/// re-serialised from what was parsed, never longer than what came in).
const FORWARDED_HEADERS: [&str; 4] = ["authorization", "traceparent", "tracestate", "baggage"];

/// The size of a header in an HTTP/2 header list (RFC 9113 §6.5.2): name, value and 32.
fn list_size(name: &str, value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// Answers 431 when the request's headers are larger than `max_header_bytes` (counted as an
/// HTTP/2 header list) or when the ones forwarded to order-service would not fit in its limit.
pub(crate) async fn limit_headers(
    State(max_header_bytes): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(error) = check_headers(request.headers(), max_header_bytes) {
        return error.into_response();
    }
    next.run(request).await
}

fn check_headers(headers: &HeaderMap, max_header_bytes: usize) -> Result<(), ApiError> {
    let total: usize = headers
        .iter()
        .map(|(name, value)| list_size(name.as_str(), value.as_bytes()))
        .sum();
    if total > max_header_bytes {
        return Err(too_large(format!(
            "the request headers take {total} bytes; at most {max_header_bytes} are accepted"
        )));
    }
    let forwarded: usize = FORWARDED_HEADERS
        .iter()
        .flat_map(|name| {
            headers
                .get_all(*name)
                .iter()
                .map(move |value| list_size(name, value.as_bytes()))
        })
        .sum();
    let budget = UPSTREAM_MAX_HEADER_LIST_BYTES - OWN_HEADERS_RESERVE;
    if forwarded > budget {
        return Err(too_large(format!(
            "Authorization and the trace context headers take {forwarded} bytes; at most {budget} can be passed on to order-service"
        )));
    }
    Ok(())
}

fn too_large(message: String) -> ApiError {
    ApiError::with_status(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Code::ResourceExhausted,
        message,
        "REQUEST_HEADERS_TOO_LARGE",
    )
}

/// Gives every error response without a JSON body (axum's own refusals that no handler
/// mapped) the JSON error body, with the gRPC code that matches its status.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, _) = response.into_parts();
    let reason = parts
        .status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_uppercase()
        .replace([' ', '-'], "_");
    let message = parts
        .status
        .canonical_reason()
        .unwrap_or("error")
        .to_owned();
    let mut json = ApiError::with_status(status, code_of(status), message, &reason).into_response();
    // Keep what the refusal said in headers (e.g. `Allow` of a 405).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// The gRPC code closest to an HTTP status (the inverse of `errors::http_status`).
pub(crate) fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 411 | 414 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 | 501 => Code::Unimplemented,
        409 => Code::Aborted,
        408 | 504 => Code::DeadlineExceeded,
        413 | 429 | 431 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        502 | 503 => Code::Unavailable,
        _ if status.is_client_error() => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_headers_must_fit_order_services_limit() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        assert!(check_headers(&headers, 16 * 1024).is_ok());
        // Within what the gateway accepts, too large for order-service.
        let big = "a".repeat(15 * 1024);
        headers.insert("authorization", HeaderValue::from_str(&big).unwrap());
        assert!(check_headers(&headers, 64 * 1024).is_err());
        // Larger than the gateway accepts at all.
        let mut headers = HeaderMap::new();
        headers.insert("x-other", HeaderValue::from_str(&big).unwrap());
        assert!(check_headers(&headers, 8 * 1024).is_err());
        assert!(check_headers(&headers, 16 * 1024).is_ok());
    }
}
