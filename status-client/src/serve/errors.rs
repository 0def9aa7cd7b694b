//! The one mapping from gRPC failures to HTTP responses: the usual status per code and a JSON
//! body carrying the gRPC code name, the message, the ErrorInfo reason and bad fields. A
//! refusal that says when to come back (order-service's `RATE_LIMITED`, with a `RetryInfo`)
//! is a 429 with `Retry-After` in whole seconds, rounded up.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;

use crate::error::{ClientError, FieldViolation, code_name};

/// An HTTP error response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    field_violations: Vec<FieldViolation>,
    /// When the caller may try again (sent as `Retry-After`).
    #[serde(skip)]
    retry_after: Option<Duration>,
}

impl ApiError {
    /// A request this service refuses before calling order-service.
    pub(crate) fn bad_request(message: impl Into<String>, reason: &str) -> Self {
        Self::local(Code::InvalidArgument, message, reason)
    }

    /// An error made here, with the code it would have had in gRPC.
    pub(crate) fn local(code: Code, message: impl Into<String>, reason: &str) -> Self {
        Self {
            status: http_status(code),
            code: code_name(code),
            message: message.into(),
            reason: Some(reason.to_owned()),
            field_violations: Vec::new(),
            retry_after: None,
        }
    }

    /// An error made here with an HTTP status of its own (e.g. 405, 413, 431), where the
    /// usual status of `code` would say less.
    pub(crate) fn with_status(
        status: StatusCode,
        code: Code,
        message: impl Into<String>,
        reason: &str,
    ) -> Self {
        Self {
            status,
            ..Self::local(code, message, reason)
        }
    }

    /// The body as it is also sent in an SSE `error` event.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"code\":\"{}\"}}", self.code))
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        Self {
            status: http_status(error.code()),
            code: error.code_name(),
            message: error.message().to_owned(),
            reason: error.reason().map(str::to_owned),
            field_violations: error.field_violations().to_vec(),
            retry_after: error.retry_delay(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after;
        let mut response = (status, Json(self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(wait)),
            );
        }
        response
    }
}

/// `Retry-After` counts whole seconds (RFC 9110); rounded up, so that a caller who waits what it
/// says is never early.
fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The HTTP status of a gRPC code, as in Google's API design guide and grpc-gateway.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 0);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn codes_map_to_the_usual_statuses() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, status) in cases {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }
}
