//! gRPC observation at the HTTP level (tower layers usable on a tonic server, a tonic
//! `Channel`, or any `http::Request`/`http::Response` service): spans following the
//! OpenTelemetry RPC semantic conventions, W3C propagation and call metrics.

mod call;
mod call_metrics;
mod client;
mod logical_call;
mod server;

pub use call::code_name;
pub use client::{AttemptNumber, GrpcClientLayer, GrpcClientService};
pub use logical_call::{finish_logical_call, logical_call_span};
pub use server::{GrpcServerLayer, GrpcServerService, ServerCallSpan, record_principal};
