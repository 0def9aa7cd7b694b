//! The gRPC transport: handlers for `orders.v1.OrderService` and `orders.v1.WebhookService` and the tower layers in front of
//! every call: the gate (auth, rate limits, admission, deadlines, the codes of requests that are
//! too large or do not decode), and in front of it `order_status_telemetry::grpc::GrpcServerLayer`
//! for the span, metrics and per-call log line.

pub mod admission;
pub mod auth;
pub mod codec_refusal;
pub mod context;
pub mod convert;
pub mod deadline;
pub mod error;
pub mod gate;
mod known_tokens;
pub mod orders;
pub mod peer;
pub mod rate_limit;
pub mod watch;
pub mod watch_route;
pub mod webhooks;
pub mod wire;
