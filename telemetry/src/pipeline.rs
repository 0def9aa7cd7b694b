//! The OpenTelemetry pipelines of one process, built without touching any global state so
//! tests can build several: a tracer provider (OTLP/gRPC batch export when an endpoint is
//! set, nothing otherwise) and one meter provider read by `/metrics` and, when an endpoint
//! is set, pushed over OTLP/gRPC.

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfig, BatchConfigBuilder, BatchSpanProcessor, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE, Sampler, SdkTracerProvider,
};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use crate::config::{ParentBasedRoot, SamplerConfig, TelemetryConfig};
use crate::export::CountingSpanExporter;
use crate::exposition::PrometheusExposition;
use crate::local_trace::LocalTraceLayer;
use crate::metrics::Metrics;

/// The instrumentation scope name of the project's spans and metrics.
pub(crate) const SCOPE: &str = "order-status";

/// Building a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The OTLP exporter could not be built from the endpoint.
    #[error("cannot build the OTLP {signal} exporter")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The Prometheus reader could not be built.
    #[error("cannot build the Prometheus metrics reader")]
    Prometheus(#[source] OTelSdkError),
    /// An OTLP endpoint is set but no Tokio runtime is running to carry the exports.
    #[error("OTLP export needs a Tokio runtime: set up telemetry inside the async main")]
    NoRuntime,
}

/// Flushing or shutting down the pipelines failed (typically: the collector is down, so
/// the last spans or metrics could not be delivered).
#[derive(Debug, thiserror::Error)]
#[error("telemetry {action} failed: traces: {traces}; metrics: {metrics}")]
pub struct FlushError {
    action: &'static str,
    traces: String,
    metrics: String,
}

/// The pipelines of one process. Spans reach it through [`Telemetry::tracing_layer`];
/// metrics through [`Telemetry::metrics`].
#[derive(Debug)]
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    meter: Meter,
    metrics: Metrics,
    exposition: PrometheusExposition,
    traced_targets: Vec<String>,
    /// The sampler, when no traces are exported: spans then get only a trace context (see
    /// [`crate::local_trace`]), not OpenTelemetry spans nobody would read.
    local_sampler: Option<Sampler>,
    /// The background log writer of [`crate::init`]; dropping it writes what is still queued.
    log_writer: Option<crate::log_writer::FlushGuard>,
}

impl Telemetry {
    /// Builds the pipelines `config` describes. Must run inside a Tokio runtime when an
    /// endpoint is set (the OTLP channel lives on it); installs nothing globally.
    pub fn build(config: &TelemetryConfig) -> Result<Self, PipelineError> {
        Self::build_with(config, |_| {})
    }

    /// Like [`Telemetry::build`], calling `metrics_ready` with the meter provider before the
    /// tracer provider is built (so the SDK's own span-processor counters can find it
    /// through the global meter provider).
    pub(crate) fn build_with(
        config: &TelemetryConfig,
        metrics_ready: impl FnOnce(&SdkMeterProvider),
    ) -> Result<Self, PipelineError> {
        let exporting = config.traces_endpoint.is_some() || config.metrics_endpoint.is_some();
        if exporting && tokio::runtime::Handle::try_current().is_err() {
            return Err(PipelineError::NoRuntime);
        }
        let resource = Resource::builder()
            .with_attributes(config.resource_attributes.clone())
            .with_service_name(config.service_name.clone())
            .build();

        let registry = prometheus::Registry::new();
        let prometheus_reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .map_err(PipelineError::Prometheus)?;
        let mut meter_builder = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(prometheus_reader);
        if let Some(endpoint) = &config.metrics_endpoint {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_retry_policy(retry_policy(config))
                .build()
                .map_err(|source| PipelineError::Exporter {
                    signal: "metrics",
                    source,
                })?;
            meter_builder = meter_builder.with_reader(
                PeriodicReader::builder(exporter)
                    .with_interval(config.metric_export_interval)
                    .build(),
            );
        }
        let meter_provider = meter_builder.build();
        let meter = meter_provider.meter(SCOPE);
        let metrics = Metrics::new(&meter);
        metrics_ready(&meter_provider);

        let mut tracer_builder = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler(config.sampler));
        if let Some(endpoint) = &config.traces_endpoint {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_retry_policy(retry_policy(config))
                .build()
                .map_err(|source| PipelineError::Exporter {
                    signal: "traces",
                    source,
                })?;
            // The batch processor works on its own thread with a bounded queue: ending a
            // span never waits for the collector; when the queue is full spans are dropped.
            let processor = BatchSpanProcessor::builder(CountingSpanExporter::new(
                exporter,
                metrics.spans_dropped.clone(),
            ))
            .with_batch_config(batch_config())
            .build();
            tracer_builder = tracer_builder.with_span_processor(processor);
        }
        let local_sampler = config
            .traces_endpoint
            .is_none()
            .then(|| sampler(config.sampler));
        Ok(Self {
            tracer_provider: tracer_builder.build(),
            meter_provider,
            meter,
            metrics,
            exposition: PrometheusExposition::new(registry),
            traced_targets: config.traced_targets.clone(),
            local_sampler,
            log_writer: None,
        })
    }

    /// A layer turning the spans of the configured targets into OpenTelemetry spans when
    /// traces are exported; without a traces endpoint, a layer giving them only their trace
    /// context (ids for log lines, propagation in and out; see [`crate::local_trace`]). Spans
    /// of other targets (h2, hyper, tonic internals) are not seen by it at all.
    pub fn tracing_layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync + 'static>
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let targets = self.traced_targets_filter();
        if let Some(sampler) = &self.local_sampler {
            return LocalTraceLayer::new(sampler.clone())
                .with_filter(targets)
                .boxed();
        }
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer_provider.tracer(SCOPE))
            // Source locations, targets, threads and busy/idle times would add six
            // attributes to every span; the span names and RPC attributes say where it is.
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(targets)
            .boxed()
    }

    /// Without a traces endpoint, [`Telemetry::tracing_layer`]'s work as a layer without a
    /// per-layer filter (it picks the configured targets' INFO spans itself), for a subscriber
    /// whose global filter lets all of those through; `None` when traces are exported.
    pub(crate) fn unfiltered_local_trace_layer<S>(&self) -> Option<LocalTraceLayer<S>> {
        let sampler = self.local_sampler.as_ref()?;
        Some(LocalTraceLayer::choosing(
            sampler.clone(),
            self.traced_targets_filter(),
        ))
    }

    /// The configured targets' spans at INFO and above.
    fn traced_targets_filter(&self) -> Targets {
        Targets::new().with_targets(
            self.traced_targets
                .iter()
                .map(|target| (target.clone(), Level::INFO)),
        )
    }

    /// Whether spans are exported (a traces endpoint is set): only then do spans become
    /// OpenTelemetry spans that something reads beyond their trace context.
    pub fn exports_traces(&self) -> bool {
        self.local_sampler.is_none()
    }

    /// The project's instruments.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The meter behind [`Telemetry::metrics`], for instruments only one service has.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The Prometheus rendering of the metrics, for `/metrics`.
    pub fn exposition(&self) -> PrometheusExposition {
        self.exposition.clone()
    }

    /// The tracer provider (for tests and for libraries wanting a tracer directly).
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// Exports every finished span and the current metrics now. Runs the blocking SDK calls
    /// off the async threads.
    pub async fn force_flush(&self) -> Result<(), FlushError> {
        let tracer_provider = self.tracer_provider.clone();
        let meter_provider = self.meter_provider.clone();
        run_blocking("flush", move || {
            (tracer_provider.force_flush(), meter_provider.force_flush())
        })
        .await
    }

    /// Flushes and stops both pipelines; call it before the process exits (the CLI too), or
    /// the last spans are lost.
    pub async fn shutdown(mut self) -> Result<(), FlushError> {
        let tracer_provider = self.tracer_provider.clone();
        let meter_provider = self.meter_provider.clone();
        let flushed = run_blocking("shutdown", move || {
            (tracer_provider.shutdown(), meter_provider.shutdown())
        })
        .await;
        // Last, so the log lines written while shutting down are written too.
        drop(self.log_writer.take());
        flushed
    }

    /// Keeps the background log writer alive as long as this pipeline.
    pub(crate) fn keep_log_writer(&mut self, guard: crate::log_writer::FlushGuard) {
        self.log_writer = Some(guard);
    }
}

async fn run_blocking(
    action: &'static str,
    work: impl FnOnce() -> (Result<(), OTelSdkError>, Result<(), OTelSdkError>) + Send + 'static,
) -> Result<(), FlushError> {
    // The SDK blocks its caller until the exporter answers, and the exporter's channel runs
    // on this runtime: blocking a runtime thread here could stall the very export awaited.
    let (traces, metrics) = match tokio::task::spawn_blocking(work).await {
        Ok(results) => results,
        Err(error) => {
            return Err(FlushError {
                action,
                traces: error.to_string(),
                metrics: error.to_string(),
            });
        }
    };
    let describe = |result: Result<(), OTelSdkError>| match result {
        Ok(()) | Err(OTelSdkError::AlreadyShutdown) => None,
        Err(error) => Some(error.to_string()),
    };
    match (describe(traces), describe(metrics)) {
        (None, None) => Ok(()),
        (traces, metrics) => Err(FlushError {
            action,
            traces: traces.unwrap_or_else(|| "ok".to_owned()),
            metrics: metrics.unwrap_or_else(|| "ok".to_owned()),
        }),
    }
}

/// Spans the batch processor holds for export when `OTEL_BSP_MAX_QUEUE_SIZE` is unset. The
/// SDK's 2,048 (with 512 per export) dropped more than half of the spans of a server at
/// 15,000 calls/s (two spans each) in `bench --otlp-collector`: each export request has a
/// fixed cost, and the queue filled between exports. With 16,384 and 2,048 per export none
/// were dropped. A full queue holds about 16 MB of spans.
const SPAN_QUEUE: usize = 16_384;
/// Spans per export request when `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` is unset (see
/// [`SPAN_QUEUE`]).
const SPANS_PER_EXPORT: usize = 2_048;

/// The batch processor's settings: the `OTEL_BSP_*` variables where set (the SDK reads them),
/// else this project's queue and batch sizes.
fn batch_config() -> BatchConfig {
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os(OTEL_BSP_MAX_QUEUE_SIZE).is_none() {
        batch = batch.with_max_queue_size(SPAN_QUEUE);
    }
    if std::env::var_os(OTEL_BSP_MAX_EXPORT_BATCH_SIZE).is_none() {
        batch = batch.with_max_export_batch_size(SPANS_PER_EXPORT);
    }
    batch.build()
}

fn retry_policy(config: &TelemetryConfig) -> RetryPolicy {
    if config.retry_exports {
        RetryPolicy::recommended()
    } else {
        RetryPolicy::disabled()
    }
}

fn sampler(config: SamplerConfig) -> Sampler {
    let root = |root: ParentBasedRoot| match root {
        ParentBasedRoot::AlwaysOn => Sampler::AlwaysOn,
        ParentBasedRoot::AlwaysOff => Sampler::AlwaysOff,
        ParentBasedRoot::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    match config {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        SamplerConfig::ParentBased(inner) => Sampler::ParentBased(Box::new(root(inner))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporting_outside_a_runtime_is_a_clear_error() {
        let mut config = TelemetryConfig::new("test");
        config.traces_endpoint = Some("http://127.0.0.1:4317".to_owned());
        assert!(matches!(
            Telemetry::build(&config),
            Err(PipelineError::NoRuntime)
        ));
        // Without an endpoint nothing needs a runtime.
        assert!(Telemetry::build(&TelemetryConfig::new("test")).is_ok());
    }
}
