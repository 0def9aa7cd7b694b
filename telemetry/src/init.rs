//! One call for a binary: read the environment, build the pipelines, install the global
//! subscriber, propagator, tracer and meter providers.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, TelemetryConfig};
use crate::logs::{LogFilter, LogFilterError, fmt_layer};
use crate::pipeline::{PipelineError, Telemetry};
use crate::propagation::propagator;

/// Telemetry could not be set up; the binary should print this and exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A variable holds a bad value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `RUST_LOG` does not parse.
    #[error(transparent)]
    LogFilter(#[from] LogFilterError),
    /// An exporter could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Another global subscriber was installed first (telemetry is set up once per process).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Sets up logs, traces and metrics from the environment (see [`TelemetryConfig::from_env`])
/// with `default_service_name` as `service.name` unless the environment names one.
/// Call inside the Tokio runtime; keep the result and `shutdown().await` it before exiting.
pub fn init(default_service_name: &str) -> Result<Telemetry, InitError> {
    init_with(&TelemetryConfig::from_env(default_service_name)?)
}

/// [`init`] with an explicit configuration.
pub fn init_with(config: &TelemetryConfig) -> Result<Telemetry, InitError> {
    // Checked first so a refused second call leaves the globals of the first untouched.
    if tracing::dispatcher::has_been_set() {
        return Err(InitError::AlreadyInstalled);
    }
    let (stderr, log_writer) = crate::log_writer::BufferedStderr::new();
    let log_filter = LogFilter::parse(&config.log_filter)?;
    let mut telemetry = Telemetry::build_with(config, |meter_provider| {
        opentelemetry::global::set_meter_provider(meter_provider.clone());
    })?;
    telemetry.keep_log_writer(log_writer);
    let installed = match telemetry.unfiltered_local_trace_layer() {
        // One path for every span and event: when the log filter lets through every span the
        // tracing layer wants (the default `info` does), it filters for the whole subscriber
        // and neither layer needs a per-layer filter, which would look each span up again in
        // the registry on every enter, exit and record, for each layer.
        Some(local_trace) if log_filter.lets_info_through(&config.traced_targets) => {
            tracing_subscriber::registry()
                .with(log_filter)
                .with(fmt_layer(config.log_format, stderr))
                .with(local_trace)
                .try_init()
        }
        // Otherwise (a quieter log, span directives, or spans exported) each layer has its own
        // filter, so a quiet log never hides spans from tracing.
        _ => tracing_subscriber::registry()
            .with(
                fmt_layer(config.log_format, stderr)
                    .with_filter(log_filter)
                    .boxed(),
            )
            .with(telemetry.tracing_layer())
            .try_init(),
    };
    installed.map_err(|_| InitError::AlreadyInstalled)?;
    opentelemetry::global::set_text_map_propagator(propagator());
    opentelemetry::global::set_tracer_provider(telemetry.tracer_provider().clone());
    tracing::debug!(
        service.name = %config.service_name,
        traces_endpoint = config.traces_endpoint.as_deref().unwrap_or("none"),
        metrics_endpoint = config.metrics_endpoint.as_deref().unwrap_or("none"),
        "telemetry ready"
    );
    Ok(telemetry)
}
