//! The gRPC transport: handlers for `orders.v1.OrderService` and the tower layers in front of
//! every call: the gate (auth, admission, deadlines, message limits), and in front of it
//! `order_status_telemetry::grpc::GrpcServerLayer` for the span, metrics and per-call log line.

pub mod admission;
pub mod auth;
pub mod context;
pub mod convert;
pub mod deadline;
pub mod error;
pub mod gate;
pub mod message_limit;
pub mod orders;
pub mod watch;
pub mod wire;
