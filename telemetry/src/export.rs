//! A span exporter wrapper that counts the spans lost when an export fails (collector down,
//! unreachable or too slow), so losses show in the metrics instead of only in a log line.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Passes batches to `inner` and adds the size of every failed batch to `dropped`.
#[derive(Debug)]
pub(crate) struct CountingSpanExporter<E> {
    inner: E,
    dropped: Counter<u64>,
}

impl<E> CountingSpanExporter<E> {
    pub(crate) fn new(inner: E, dropped: Counter<u64>) -> Self {
        Self { inner, dropped }
    }
}

impl<E: SpanExporter> SpanExporter for CountingSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if result.is_err() {
            self.dropped
                .add(spans, &[KeyValue::new("reason", "export_failed")]);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
