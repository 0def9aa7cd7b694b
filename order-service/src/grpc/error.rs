//! The one mapping from failures to gRPC statuses. Every error carries a `google.rpc.ErrorInfo`
//! (domain `orders.v1`, an UPPER_SNAKE reason), validation errors a `google.rpc.BadRequest`
//! listing every field; internal causes are logged here and never sent.

use crate::domain::Error;
use crate::error_chain::DisplayChain;
use orders_proto::reason;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A status with an `ErrorInfo` of `reason` and no metadata.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    status_with(code, reason, message, HashMap::new())
}

/// A status with an `ErrorInfo` of `reason` and `metadata`.
pub fn status_with(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, reason::DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let meta = |pairs: &[(&str, String)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<HashMap<_, _>>()
        };
        let message = error.to_string();
        match error {
            Error::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                details.set_error_info(reason::VALIDATION_FAILED, reason::DOMAIN, HashMap::new());
                let mut summary = Vec::with_capacity(violations.len());
                for violation in &violations {
                    details.add_bad_request_violation(&violation.field, &violation.description);
                    summary.push(format!("{}: {}", violation.field, violation.description));
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid request: {}", summary.join("; ")),
                    details,
                )
            }
            Error::NotFound(id) => status_with(
                Code::NotFound,
                reason::ORDER_NOT_FOUND,
                message,
                meta(&[("order_id", id.to_string())]),
            ),
            Error::EndpointNotFound(id) => status_with(
                Code::NotFound,
                reason::WEBHOOK_ENDPOINT_NOT_FOUND,
                message,
                meta(&[("endpoint_id", id)]),
            ),
            Error::InvalidTransition { from, to } => status_with(
                Code::FailedPrecondition,
                reason::INVALID_TRANSITION,
                message,
                meta(&[("from", from.to_string()), ("to", to.to_string())]),
            ),
            Error::VersionMismatch { expected, actual } => status_with(
                Code::Aborted,
                reason::VERSION_MISMATCH,
                message,
                meta(&[
                    ("expected_version", expected.to_string()),
                    ("current_version", actual.to_string()),
                ]),
            ),
            Error::IdempotencyKeyReused => status(
                Code::InvalidArgument,
                reason::IDEMPOTENCY_KEY_REUSED,
                message,
            ),
            Error::RequestInProgress => status(Code::Aborted, reason::REQUEST_IN_PROGRESS, message),
            Error::DeadlineExceeded => {
                status(Code::DeadlineExceeded, reason::DEADLINE_EXCEEDED, message)
            }
            Error::EventsExpired { oldest, .. } => status_with(
                Code::OutOfRange,
                reason::EVENTS_EXPIRED,
                message,
                meta(&[("oldest_sequence", oldest.to_string())]),
            ),
            Error::SequenceAhead { latest, .. } => status_with(
                Code::OutOfRange,
                reason::SEQUENCE_AHEAD,
                message,
                meta(&[("latest_sequence", latest.to_string())]),
            ),
            Error::WatcherTooSlow { resume_after, .. } => status_with(
                Code::ResourceExhausted,
                reason::WATCHER_TOO_SLOW,
                message,
                meta(&[("resume_after_sequence", resume_after.to_string())]),
            ),
            Error::Unavailable(cause) => {
                tracing::warn!(error = %DisplayChain(&*cause), "store unavailable");
                status(
                    Code::Unavailable,
                    reason::STORE_UNAVAILABLE,
                    "the order store is unavailable; retry later",
                )
            }
            Error::Internal(cause) => {
                tracing::error!(error = %DisplayChain(&*cause), "internal error");
                status(Code::Internal, reason::INTERNAL, "internal error")
            }
        }
    }
}
