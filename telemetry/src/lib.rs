//! Logs, traces and metrics shared by order-service and status-client.
//!
//! - [`init`]: for a binary: stderr logs (text or JSON, with `trace_id`/`span_id`), an
//!   OpenTelemetry pipeline exporting over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//!   set, W3C propagation; returns a [`Telemetry`] to `shutdown().await` before exiting.
//! - [`grpc`]: tower layers for a tonic server and a tonic channel (spans per call and per
//!   attempt, propagation, call metrics) and the logical-call span for retry loops.
//! - [`HttpServerLayer`]: the same for a plain HTTP server (status-client's `serve`).
//! - [`Metrics`]: every instrument of the project; [`PrometheusExposition`] renders them
//!   for `/metrics`, [`serve_metrics`] serves them when a process has no HTTP server.
//! - [`propagation`]: `traceparent` in and out of `http::HeaderMap`s.
//! - [`DisplayChain`]: an error with its whole cause chain, for log lines; [`AcceptErrors`]:
//!   backoff and once-per-episode logging for accept loops.

mod accept_errors;
pub mod config;
pub mod error_chain;
mod export;
mod exposition;
pub mod grpc;
mod http_server;
mod init;
mod json_log;
mod local_trace;
mod log_writer;
mod logs;
mod metrics;
mod metrics_server;
mod pipeline;
pub mod propagation;
mod store_durations;

pub use accept_errors::AcceptErrors;
pub use config::{LogFormat, TelemetryConfig};
pub use error_chain::DisplayChain;
pub use exposition::{
    CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE, ExpositionError, PrometheusExposition,
};
pub use http_server::{HttpServerLayer, HttpServerService, RouteOf};
pub use init::{InitError, init, init_with};
pub use logs::{LogFilterError, log_layer};
pub use metrics::{Metrics, WatchStreamGuard};
pub use metrics_server::{METRICS_PATH, serve_metrics};
pub use pipeline::{FlushError, PipelineError, Telemetry};
