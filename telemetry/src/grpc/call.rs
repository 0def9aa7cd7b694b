//! One observed gRPC call (a server call or a client attempt): its span, timer and metric
//! attributes, finished exactly once with the call's gRPC status, wherever that status
//! shows up (response headers, trailers at the end of the body, a transport error, or the
//! call being dropped).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry::trace::Status;
use tonic::Code;
use tonic::body::Body as TonicBody;
use tonic::codegen::Bytes;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::call_metrics::MethodMetrics;

/// Which end of the call this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// `/orders.v1.OrderService/GetOrder` → (`orders.v1.OrderService`, `GetOrder`).
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("unknown", path))
}

/// The canonical upper-case name of a gRPC code, as the gRPC documentation spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status carried by `grpc-status`/`grpc-message` in `headers`, if any. The message of an
/// OK status is never used (only failures put theirs on the span), so it is not looked up.
fn status_from_headers(headers: &HeaderMap) -> Option<(Code, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    let code = Code::from_i32(code);
    if code == Code::Ok {
        return Some((code, String::new()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .map(|raw| {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some((code, message))
}

/// The code a client infers from an HTTP status when no `grpc-status` came back (the gRPC
/// HTTP/2 protocol's mapping).
fn code_from_http_status(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The span, timer and metric instruments of one call until its status is known.
pub(crate) struct CallRecord {
    span: tracing::Span,
    side: Side,
    started: Instant,
    /// The instruments of the call's method, bound to its attributes.
    method: Arc<MethodMetrics>,
    finished: bool,
}

impl CallRecord {
    pub(crate) fn start(span: tracing::Span, side: Side, method: Arc<MethodMetrics>) -> Self {
        method.started();
        Self {
            span,
            side,
            started: Instant::now(),
            method,
            finished: false,
        }
    }

    /// Hands the call on with its response: finished at once when the response head already
    /// holds the outcome (a trailers-only response, which carries `grpc-status` in its
    /// headers, or an HTTP status other than 200 without one), otherwise by the body when
    /// its trailers go through.
    pub(crate) fn observe_response<B>(
        mut self,
        response: http::Response<B>,
    ) -> http::Response<TonicBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + std::fmt::Display,
    {
        let (parts, body) = response.into_parts();
        let call = if let Some((code, message)) = status_from_headers(&parts.headers) {
            self.finish(code, &message);
            None
        } else if parts.status != http::StatusCode::OK {
            self.finish(
                code_from_http_status(parts.status),
                &format!("HTTP status {}", parts.status),
            );
            None
        } else {
            Some(self)
        };
        http::Response::from_parts(parts, TonicBody::new(ObservedBody::new(body, call)))
    }

    /// Records the call's outcome on the span and in the metrics; later calls do nothing.
    pub(crate) fn finish(&mut self, code: Code, message: &str) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        self.span.record("rpc.grpc.status_code", code as i64);
        if code != Code::Ok {
            // Every non-OK code marks the span as an error on both sides, so a failed call is
            // visible as failed wherever one looks at it.
            let name = code_name(code);
            self.span.record("error.type", name);
            self.span
                .set_status(Status::error(format!("{name}: {message}")));
            self.span.add_event(
                "exception",
                vec![
                    KeyValue::new("exception.type", name),
                    KeyValue::new("exception.message", message.to_owned()),
                ],
            );
        }
        self.method.finished(code, elapsed);
        if self.side == Side::Server {
            {
                // The server's access log: one line per call, inside the call's span (which
                // carries the principal once auth recorded it; never a token). The span is
                // entered, not only named as parent: entering makes its OpenTelemetry context
                // current, and that is where the line takes its trace_id and span_id from.
                let latency_ms = elapsed * 1e3;
                let code = code_name(code);
                let method = self.method.path();
                let _entered = self.span.enter();
                if matches!(code, "INTERNAL" | "UNKNOWN" | "DATA_LOSS") {
                    tracing::warn!(method, code, latency_ms, "call finished");
                } else {
                    tracing::info!(method, code, latency_ms, "call finished");
                }
            }
        }
    }

    pub(crate) fn finish_from_trailers(&mut self, trailers: &HeaderMap) {
        match status_from_headers(trailers) {
            Some((code, message)) => self.finish(code, &message),
            None => self.finish(Code::Unknown, "trailers without grpc-status"),
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        // Nobody read the response to its end: the caller went away (server side) or gave
        // up on the response (client side).
        self.finish(
            Code::Cancelled,
            "the call ended before its status was received",
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that finishes its call when the trailers (or the end, or an error)
    /// go through. It does not enter the call's span per poll: a server stream that does work
    /// of its own (a watch reading stored events) carries the span it was opened in, so a
    /// stream of many small frames does not pay a span enter and exit for each.
    struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<CallRecord>,
    }
}

impl<B> ObservedBody<B> {
    fn new(inner: B, call: Option<CallRecord>) -> Self {
        Self { inner, call }
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(call) = this.call.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    call.finish_from_trailers(trailers);
                }
            }
            Some(Err(error)) => call.finish(Code::Unknown, &error.to_string()),
            None => call.finish(Code::Unknown, "the response ended without grpc-status"),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
