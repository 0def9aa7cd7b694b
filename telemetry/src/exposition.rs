//! Prometheus text exposition of the OpenTelemetry metrics, for `/metrics`.
//!
//! The OpenTelemetry meter provider is the single source of truth; `opentelemetry-prometheus`
//! is one of its readers and renders what it reads in the Prometheus text format.

use crate::DisplayChain;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Rendering the metrics failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot render metrics in the Prometheus text format")]
pub struct ExpositionError(#[source] prometheus::Error);

/// Renders the current metrics; cheap to clone and share with an HTTP handler.
#[derive(Clone, Debug)]
pub struct PrometheusExposition {
    registry: prometheus::Registry,
}

impl PrometheusExposition {
    pub(crate) fn new(registry: prometheus::Registry) -> Self {
        Self { registry }
    }

    /// The metrics as Prometheus text.
    pub fn render(&self) -> Result<String, ExpositionError> {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(ExpositionError)
    }

    /// A complete `/metrics` response: 200 with the text, or 500 saying rendering failed.
    /// An axum handler can return it as is.
    pub fn http_response(&self) -> http::Response<String> {
        let (status, body) = match self.render() {
            Ok(text) => (http::StatusCode::OK, text),
            Err(error) => {
                tracing::error!(error = %DisplayChain(&error), "rendering /metrics failed");
                (
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics could not be rendered\n".to_owned(),
                )
            }
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .expect("static status and header are valid")
    }
}
