//! Telemetry settings read from the standard OpenTelemetry variables plus `RUST_LOG` and
//! `LOG_FORMAT`, through a lookup function so they can be tested without touching the
//! process environment.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::KeyValue;

/// The variables this crate reads; listed so the README and error messages agree.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Endpoint for traces only; wins over [`OTLP_ENDPOINT`] for traces.
pub const OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Endpoint for metrics only; wins over [`OTLP_ENDPOINT`] for metrics.
pub const OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
/// `service.name` of the resource.
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Extra resource attributes, `key=value,key2=value2` with percent-encoded values.
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// Sampler name (`parentbased_always_on` by default).
pub const TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// Sampler argument (the ratio of the `*traceidratio` samplers).
pub const TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// Interval between two OTLP metric exports, in milliseconds.
pub const METRIC_EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
/// Log filter directives.
pub const RUST_LOG: &str = "RUST_LOG";
/// `json` or `text`.
pub const LOG_FORMAT: &str = "LOG_FORMAT";

/// A setting that could not be understood; startup must stop with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value outside its documented set.
    #[error("{variable}={value:?} is not valid: {reason}")]
    Invalid {
        /// The variable name.
        variable: &'static str,
        /// What it held.
        value: String,
        /// What was expected.
        reason: String,
    },
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable single lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Which traces are recorded (`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// A fixed share of traces, chosen by trace id.
    TraceIdRatio(f64),
    /// Follow the caller's decision; for new traces use the inner choice.
    ParentBased(ParentBasedRoot),
}

/// The root decision of a parent-based sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentBasedRoot {
    /// Sample every new trace.
    AlwaysOn,
    /// Sample no new trace.
    AlwaysOff,
    /// Sample this share of new traces.
    TraceIdRatio(f64),
}

/// Everything the pipelines need, already validated.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of every span and metric.
    pub service_name: String,
    /// Further resource attributes from `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<KeyValue>,
    /// Where spans go (OTLP/gRPC); `None` means nothing is exported.
    pub traces_endpoint: Option<String>,
    /// Where metrics go (OTLP/gRPC); `None` means only `/metrics` shows them.
    pub metrics_endpoint: Option<String>,
    /// Which traces are recorded.
    pub sampler: SamplerConfig,
    /// How often metrics are pushed over OTLP.
    pub metric_export_interval: Duration,
    /// Filter directives of the log output.
    pub log_filter: String,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// Targets whose spans become OpenTelemetry spans. Everything else (h2, hyper, tonic
    /// internals) is left out: turning every transport span into an OpenTelemetry span cut a
    /// tonic server's throughput by more than ten times.
    pub traced_targets: Vec<String>,
    /// Whether a failed OTLP export is retried (OTLP's recommended backoff: 3 retries, up to
    /// 1.6 s apart). A process that exports once as it exits turns this off, so a collector
    /// that is down does not hold up its exit.
    pub retry_exports: bool,
}

/// The log filter when `RUST_LOG` is unset: `info`, except for the OpenTelemetry SDK's own
/// start-up chatter (its warnings and errors, e.g. a failed export, still show).
pub const DEFAULT_LOG_FILTER: &str =
    "info,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

/// Targets traced by default: the two services and this crate's gRPC layers.
pub const DEFAULT_TRACED_TARGETS: [&str; 3] =
    ["order_service", "status_client", "order_status_telemetry"];

impl TelemetryConfig {
    /// A configuration that exports nothing, logs text at `info` and traces the project's
    /// own targets: the starting point for tests.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            resource_attributes: Vec::new(),
            traces_endpoint: None,
            metrics_endpoint: None,
            sampler: SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn),
            metric_export_interval: Duration::from_secs(60),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            log_format: LogFormat::Text,
            traced_targets: DEFAULT_TRACED_TARGETS.map(str::to_owned).to_vec(),
            retry_exports: true,
        }
    }

    /// Reads the process environment. `default_service_name` is used when neither
    /// `OTEL_SERVICE_NAME` nor a `service.name` in `OTEL_RESOURCE_ATTRIBUTES` is set.
    pub fn from_env(default_service_name: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(
            default_service_name,
            |name| std::env::var(name).ok(),
            || std::io::stderr().is_terminal(),
        )
    }

    /// Reads settings through `lookup` (a variable name to its value); `stderr_is_terminal`
    /// picks the default log format.
    pub fn from_lookup(
        default_service_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
        stderr_is_terminal: impl FnOnce() -> bool,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut config = Self::new(default_service_name);

        if let Some(raw) = get(RESOURCE_ATTRIBUTES) {
            for attribute in parse_resource_attributes(&raw)? {
                if attribute.key.as_str() == "service.name" {
                    config.service_name = attribute.value.to_string();
                } else {
                    config.resource_attributes.push(attribute);
                }
            }
        }
        if let Some(name) = get(SERVICE_NAME) {
            config.service_name = name.trim().to_owned();
        }

        let shared_endpoint = get(OTLP_ENDPOINT);
        config.traces_endpoint = get(OTLP_TRACES_ENDPOINT).or_else(|| shared_endpoint.clone());
        config.metrics_endpoint = get(OTLP_METRICS_ENDPOINT).or(shared_endpoint);
        for (variable, endpoint) in [
            (OTLP_TRACES_ENDPOINT, &config.traces_endpoint),
            (OTLP_METRICS_ENDPOINT, &config.metrics_endpoint),
        ] {
            if let Some(endpoint) = endpoint {
                check_endpoint(variable, endpoint)?;
            }
        }

        config.sampler = parse_sampler(get(TRACES_SAMPLER), get(TRACES_SAMPLER_ARG))?;

        if let Some(raw) = get(METRIC_EXPORT_INTERVAL) {
            let millis: u64 = raw
                .trim()
                .parse()
                .ok()
                .filter(|millis| *millis > 0)
                .ok_or_else(|| {
                    invalid(METRIC_EXPORT_INTERVAL, &raw, "expected milliseconds > 0")
                })?;
            config.metric_export_interval = Duration::from_millis(millis);
        }

        if let Some(filter) = get(RUST_LOG) {
            config.log_filter = filter;
        }
        config.log_format = match get(LOG_FORMAT) {
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                _ => return Err(invalid(LOG_FORMAT, &raw, "expected `json` or `text`")),
            },
            None if stderr_is_terminal() => LogFormat::Text,
            None => LogFormat::Json,
        };
        Ok(config)
    }
}

fn check_endpoint(variable: &'static str, endpoint: &str) -> Result<(), ConfigError> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|error| invalid(variable, endpoint, format!("not a URI: {error}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(()),
        _ => Err(invalid(
            variable,
            endpoint,
            "expected http://host:port or https://host:port",
        )),
    }
}

/// Parses `key=value,key2=value2` (values percent-encoded, as the specification says).
fn parse_resource_attributes(raw: &str) -> Result<Vec<KeyValue>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .filter(|(key, _)| !key.trim().is_empty())
                .ok_or_else(|| {
                    invalid(
                        RESOURCE_ATTRIBUTES,
                        raw,
                        format!("`{pair}` is not key=value"),
                    )
                })?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|error| invalid(RESOURCE_ATTRIBUTES, raw, error.to_string()))?;
            Ok(KeyValue::new(key.trim().to_owned(), value.into_owned()))
        })
        .collect()
}

fn parse_sampler(name: Option<String>, arg: Option<String>) -> Result<SamplerConfig, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        match &arg {
            None => Ok(1.0),
            Some(raw) => raw
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .ok_or_else(|| invalid(TRACES_SAMPLER_ARG, raw, "expected a number from 0 to 1")),
        }
    };
    let Some(name) = name else {
        return Ok(SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn));
    };
    Ok(match name.trim() {
        "always_on" => SamplerConfig::AlwaysOn,
        "always_off" => SamplerConfig::AlwaysOff,
        "traceidratio" => SamplerConfig::TraceIdRatio(ratio()?),
        "parentbased_always_on" => SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn),
        "parentbased_always_off" => SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOff),
        "parentbased_traceidratio" => {
            SamplerConfig::ParentBased(ParentBasedRoot::TraceIdRatio(ratio()?))
        }
        _ => {
            return Err(invalid(
                TRACES_SAMPLER,
                &name,
                "expected always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)], terminal: bool) -> Result<TelemetryConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        TelemetryConfig::from_lookup("order-service", |name| vars.get(name).cloned(), || terminal)
    }

    #[test]
    fn nothing_set_exports_nothing_and_logs_by_terminal() {
        let on_terminal = config(&[], true).unwrap();
        assert_eq!(on_terminal.service_name, "order-service");
        assert_eq!(on_terminal.traces_endpoint, None);
        assert_eq!(on_terminal.metrics_endpoint, None);
        assert_eq!(on_terminal.log_format, LogFormat::Text);
        assert_eq!(on_terminal.log_filter, DEFAULT_LOG_FILTER);
        assert_eq!(
            on_terminal.sampler,
            SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn)
        );
        assert_eq!(config(&[], false).unwrap().log_format, LogFormat::Json);
        assert_eq!(
            config(&[(LOG_FORMAT, "text")], false).unwrap().log_format,
            LogFormat::Text
        );
    }

    #[test]
    fn endpoint_applies_to_both_signals_unless_overridden() {
        let both = config(&[(OTLP_ENDPOINT, "http://collector:4317")], true).unwrap();
        assert_eq!(
            both.traces_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(
            both.metrics_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        let traces_only = config(&[(OTLP_TRACES_ENDPOINT, "http://jaeger:4317")], true).unwrap();
        assert_eq!(
            traces_only.traces_endpoint.as_deref(),
            Some("http://jaeger:4317")
        );
        assert_eq!(traces_only.metrics_endpoint, None);
        let empty = config(&[(OTLP_ENDPOINT, "  ")], true).unwrap();
        assert_eq!(empty.traces_endpoint, None);
    }

    #[test]
    fn service_name_precedence() {
        let from_attributes = config(
            &[(
                RESOURCE_ATTRIBUTES,
                "service.name=a,deployment.environment=dev%20one",
            )],
            true,
        )
        .unwrap();
        assert_eq!(from_attributes.service_name, "a");
        assert_eq!(from_attributes.resource_attributes.len(), 1);
        assert_eq!(
            from_attributes.resource_attributes[0].value.as_str(),
            "dev one"
        );
        let explicit = config(
            &[(RESOURCE_ATTRIBUTES, "service.name=a"), (SERVICE_NAME, "b")],
            true,
        )
        .unwrap();
        assert_eq!(explicit.service_name, "b");
    }

    #[test]
    fn samplers() {
        let ratio = config(
            &[
                (TRACES_SAMPLER, "parentbased_traceidratio"),
                (TRACES_SAMPLER_ARG, "0.25"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            ratio.sampler,
            SamplerConfig::ParentBased(ParentBasedRoot::TraceIdRatio(0.25))
        );
        assert_eq!(
            config(&[(TRACES_SAMPLER, "always_off")], true)
                .unwrap()
                .sampler,
            SamplerConfig::AlwaysOff
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (vars, variable) in [
            (vec![(LOG_FORMAT, "yaml")], LOG_FORMAT),
            (vec![(TRACES_SAMPLER, "sometimes")], TRACES_SAMPLER),
            (
                vec![(TRACES_SAMPLER, "traceidratio"), (TRACES_SAMPLER_ARG, "2")],
                TRACES_SAMPLER_ARG,
            ),
            (
                vec![(OTLP_ENDPOINT, "collector:4317")],
                OTLP_TRACES_ENDPOINT,
            ),
            (vec![(RESOURCE_ATTRIBUTES, "novalue")], RESOURCE_ATTRIBUTES),
            (
                vec![(METRIC_EXPORT_INTERVAL, "soon")],
                METRIC_EXPORT_INTERVAL,
            ),
        ] {
            let error = config(&vars, true).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{error}");
        }
    }
}
