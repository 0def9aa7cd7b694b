//! The typed error of every client call: the gRPC code, the server's message, and the
//! `google.rpc.ErrorInfo` reason, `BadRequest` field violations and `RetryInfo` delay when the
//! server sent them.
//! Transport failures and tonic's own timeouts are normalised to the codes the gRPC contract
//! names (`UNAVAILABLE`, `DEADLINE_EXCEEDED`), so callers and the retry policy see one vocabulary.
//! A failure to connect is told apart from a connection that broke: only the first proves the
//! request never reached a server (see [`ClientError::never_reached_a_server`]).

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}{}", code_name(*code), reason.as_deref().map(|r| format!(" (reason {r})")).unwrap_or_default())]
pub struct ClientError {
    code: Code,
    message: String,
    reason: Option<String>,
    field_violations: Vec<FieldViolation>,
    pushback: Option<Result<Duration, ()>>,
    retry_delay: Option<Duration>,
    never_reached_a_server: bool,
}

/// One invalid field of a request, from the server's `google.rpc.BadRequest` detail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldViolation {
    /// Path of the field, e.g. `items[0].quantity`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl ClientError {
    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The code's canonical name, e.g. `NOT_FOUND`.
    pub fn code_name(&self) -> &'static str {
        code_name(self.code)
    }

    /// The message (the server's, or the transport's for failures before the server answered).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `ErrorInfo` reason (domain `orders.v1`), when the server sent one.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The invalid fields the server listed, if any.
    pub fn field_violations(&self) -> &[FieldViolation] {
        &self.field_violations
    }

    /// Whether the attempt failed before its request left this client: no connection to a
    /// server could be made (refused, no route, connect timeout). Such a request was not
    /// processed anywhere and is safe to send again, whatever it does. A connection that
    /// broke after the request was written, or a TLS handshake that failed, is not this.
    pub fn never_reached_a_server(&self) -> bool {
        self.never_reached_a_server
    }

    /// How long the server said to wait before trying again (its `google.rpc.RetryInfo`), e.g.
    /// until a rate-limited principal may call again.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_delay
    }

    /// What the server asked for in `grpc-retry-pushback-ms`.
    pub(crate) fn pushback(&self) -> Option<Result<Duration, ()>> {
        self.pushback
    }

    /// The error of a call whose overall deadline passed.
    pub(crate) fn deadline_exceeded(
        timeout: Duration,
        attempts: u32,
        last: Option<&ClientError>,
    ) -> Self {
        let mut message = format!(
            "deadline of {} exceeded after {attempts} attempt(s)",
            readable(timeout)
        );
        if let Some(last) = last {
            message.push_str(&format!("; last error: {last}"));
        }
        Self::synthetic(Code::DeadlineExceeded, message, None)
    }

    /// An error made on the client side, not received from the server.
    pub(crate) fn synthetic(code: Code, message: impl Into<String>, reason: Option<&str>) -> Self {
        Self {
            code,
            message: message.into(),
            reason: reason.map(str::to_owned),
            field_violations: Vec::new(),
            pushback: None,
            retry_delay: None,
            never_reached_a_server: false,
        }
    }
}

/// A duration as people write it: whole milliseconds (`1s`, `1s 500ms`), never the
/// nanoseconds of a remaining budget (`999ms 999us 744ns`); sub-millisecond ones as they are.
pub(crate) fn readable(duration: Duration) -> humantime::FormattedDuration {
    let rounded = if duration >= Duration::from_millis(1) {
        Duration::from_millis(
            u64::try_from((duration.as_micros() + 500) / 1000).unwrap_or(u64::MAX),
        )
    } else {
        duration
    };
    humantime::format_duration(rounded)
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        let details = status.get_error_details();
        let reason = details
            .error_info()
            .map(|info| info.reason.clone())
            .filter(|r| !r.is_empty());
        let field_violations = details
            .bad_request()
            .map(|br| {
                br.field_violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            code: normalised_code(&status),
            message: message_with_causes(&status),
            reason,
            field_violations,
            pushback: crate::retry::pushback(status.metadata()),
            retry_delay: details.retry_info().and_then(|info| info.retry_delay),
            never_reached_a_server: failed_to_connect(&status),
        }
    }
}

/// Whether `status` is tonic's report of a connection that could not be made at the TCP level.
///
/// tonic wraps whatever its connector returned in [`tonic::ConnectError`]; a request is only
/// written once that connection exists, so the error proves the request went nowhere. Within
/// it, only socket errors of connecting count (refused, unreachable, timed out, reset while
/// connecting): a TLS handshake failure also happens before the request, but it is a verdict
/// on this client's configuration that waiting will not change. A broken established
/// connection surfaces as a `hyper`/`h2` error outside any `ConnectError`, so it never counts.
fn failed_to_connect(status: &Status) -> bool {
    use std::io::ErrorKind;
    let mut cause = std::error::Error::source(status);
    let mut connecting = false;
    while let Some(error) = cause {
        if error.is::<tonic::ConnectError>() {
            connecting = true;
        } else if connecting && let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::NetworkDown
                    | ErrorKind::AddrNotAvailable
            );
        }
        cause = error.source();
    }
    false
}

/// The status's message followed by the causes of a locally made status (`tcp connect error:
/// Connection refused (os error 111)`), so a user sees why a server could not be reached.
fn message_with_causes(status: &Status) -> String {
    let mut message = status.message().to_owned();
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        let text = error.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = error.source();
    }
    message
}

/// The code the gRPC contract gives to what happened.
///
/// Statuses the server sent have no `source`; statuses tonic makes locally from a transport
/// failure do. tonic reports its own expired `grpc-timeout` as `CANCELLED` (contract:
/// `DEADLINE_EXCEEDED`), and a connection that breaks mid-call as `UNKNOWN`/`INTERNAL`/
/// `CANCELLED` depending on where it broke (contract: `UNAVAILABLE`, which is what tells a
/// client to try another replica).
fn normalised_code(status: &Status) -> Code {
    let Some(source) = std::error::Error::source(status) else {
        return status.code();
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(err) = cause {
        if err.is::<tonic::TimeoutExpired>() {
            return Code::DeadlineExceeded;
        }
        cause = err.source();
    }
    match status.code() {
        Code::Unknown | Code::Internal | Code::Cancelled => Code::Unavailable,
        other => other,
    }
}

/// The canonical UPPER_SNAKE name of a gRPC code (shared with the telemetry labels).
pub use order_status_telemetry::grpc::code_name;

#[cfg(test)]
mod tests {
    use super::*;
    use orders_proto::reason;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn reason_and_field_violations_are_kept() {
        let mut details =
            ErrorDetails::with_error_info(reason::VALIDATION_FAILED, reason::DOMAIN, []);
        details.add_bad_request_violation("items[0].quantity", "must be 1-10000");
        let status = Status::with_error_details(Code::InvalidArgument, "invalid order", details);
        let error = ClientError::from(status);
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(error.reason(), Some("VALIDATION_FAILED"));
        assert_eq!(error.field_violations()[0].field, "items[0].quantity");
        assert_eq!(
            error.to_string(),
            "INVALID_ARGUMENT: invalid order (reason VALIDATION_FAILED)"
        );
    }

    #[test]
    fn the_retry_info_delay_is_kept() {
        let mut details = ErrorDetails::with_error_info(reason::RATE_LIMITED, reason::DOMAIN, []);
        details.set_retry_info(Some(Duration::from_millis(1500)));
        let status = Status::with_error_details(Code::ResourceExhausted, "slow down", details);
        let error = ClientError::from(status);
        assert_eq!(error.retry_delay(), Some(Duration::from_millis(1500)));
        assert_eq!(
            ClientError::from(Status::unavailable("x")).retry_delay(),
            None
        );
    }

    #[test]
    fn tonic_timeouts_become_deadline_exceeded() {
        let status = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(status.code(), Code::Cancelled);
        assert_eq!(ClientError::from(status).code(), Code::DeadlineExceeded);
    }

    #[test]
    fn only_a_failed_tcp_connect_counts_as_never_reaching_a_server() {
        use std::io::{Error, ErrorKind};
        let connect = |kind: ErrorKind| {
            let cause = tonic::ConnectError(Box::new(Error::new(kind, "connecting")));
            ClientError::from(Status::from_error(Box::new(cause)))
        };
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::TimedOut,
            ErrorKind::HostUnreachable,
        ] {
            let error = connect(kind);
            assert!(error.never_reached_a_server(), "{kind:?}");
            assert_eq!(error.code(), Code::Unavailable);
        }
        // A TLS handshake that failed: before the request, but not a reason to wait.
        assert!(!connect(ErrorKind::InvalidData).never_reached_a_server());
        // A connection that broke after it was made.
        let broken = Status::from_error(Box::new(Error::new(ErrorKind::ConnectionReset, "reset")));
        assert!(!ClientError::from(broken).never_reached_a_server());
        assert!(!ClientError::from(Status::unavailable("from a server")).never_reached_a_server());
    }

    #[test]
    fn durations_in_messages_are_whole_milliseconds() {
        let almost_a_second = Duration::from_nanos(999_999_744);
        assert_eq!(readable(almost_a_second).to_string(), "1s");
        assert_eq!(
            readable(Duration::from_millis(1500)).to_string(),
            "1s 500ms"
        );
        assert_eq!(readable(Duration::from_micros(250)).to_string(), "250us");
    }

    #[test]
    fn transport_failures_become_unavailable() {
        let io = std::io::Error::other("connection reset");
        let status = Status::from_error(Box::new(io));
        assert_eq!(ClientError::from(status).code(), Code::Unavailable);
        assert_eq!(
            ClientError::from(Status::unknown("from the server")).code(),
            Code::Unknown
        );
    }
}
