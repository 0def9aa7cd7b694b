//! The span of one logical client call, opened by a retry loop around its attempts so that
//! every attempt (see [`super::GrpcClientLayer`]) shows up beneath it.

use opentelemetry::KeyValue;
use opentelemetry::trace::Status;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::call::code_name;

/// Opens the span of a logical call to `service`/`method` (e.g. `orders.v1.OrderService`,
/// `GetOrder`). Instrument the whole retry loop with it; finish it with
/// [`finish_logical_call`].
pub fn logical_call_span(service: &str, method: &str) -> tracing::Span {
    tracing::info_span!(
        target: "order_status_telemetry::grpc",
        "grpc.call",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.attempts = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Records how the logical call ended: how many attempts it took and, for a failure, the
/// final gRPC code and message (`status.code(), status.message()` of a `tonic::Status`).
pub fn finish_logical_call(
    span: &tracing::Span,
    attempts: u32,
    outcome: Result<(), (tonic::Code, &str)>,
) {
    span.record("rpc.attempts", i64::from(attempts));
    match outcome {
        Ok(()) => {
            span.record("rpc.grpc.status_code", tonic::Code::Ok as i64);
        }
        Err((code, message)) => {
            let name = code_name(code);
            span.record("rpc.grpc.status_code", code as i64);
            span.record("error.type", name);
            span.set_status(Status::error(format!("{name}: {message}")));
            span.add_event(
                "exception",
                vec![
                    KeyValue::new("exception.type", name),
                    KeyValue::new("exception.message", message.to_owned()),
                ],
            );
        }
    }
}
