//! Tests across the real binaries (order-service, status-client, the OTLP receiver), one test
//! binary: every module starts its own processes on port 0.

mod rate_limits;
mod status_client_cli;
mod status_client_resilience;
mod status_client_serve;
mod status_client_serve_hardening;
mod telemetry_metrics;
mod telemetry_support;
mod telemetry_traces;
mod tls;
mod webhook_traces;
mod webhooks_cli;
