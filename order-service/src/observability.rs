//! What the server reports into: the metric instruments and their Prometheus text view, taken
//! from the process's telemetry (or from a test's own pipeline).

use order_status_telemetry::{Metrics, PrometheusExposition, Telemetry};

/// Metric instruments and their exposition, handed to [`crate::startup::Application::build`].
#[derive(Clone)]
pub struct Observability {
    /// Instruments the layers, handlers and store record into.
    pub metrics: Metrics,
    /// The Prometheus text view of the same meter provider, served on the metrics address.
    pub exposition: PrometheusExposition,
    /// Whether spans are exported: only then is store work given spans of its own.
    pub spans_exported: bool,
}

impl Observability {
    /// The instruments and exposition of `telemetry`.
    pub fn of(telemetry: &Telemetry) -> Self {
        Observability {
            metrics: telemetry.metrics().clone(),
            exposition: telemetry.exposition(),
            spans_exported: telemetry.exports_traces(),
        }
    }
}
