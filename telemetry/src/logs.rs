//! Log lines on stderr, text or JSON, each one made inside a span carrying that span's
//! OpenTelemetry `trace_id` and `span_id` so logs and traces can be joined.

use std::fmt;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::json_log::{JsonLine, JsonSpanFields};

/// The log layer's filter directives could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("RUST_LOG={directives:?} is not a valid log filter")]
pub struct LogFilterError {
    directives: String,
    #[source]
    source: tracing_subscriber::filter::ParseError,
}

/// A layer writing log lines to `writer`, filtered by `directives` (`RUST_LOG` syntax).
/// The filter applies to this layer only, so a quiet log never hides spans from tracing.
pub fn log_layer<S, W>(
    format: LogFormat,
    directives: &str,
    writer: W,
) -> Result<Box<dyn Layer<S> + Send + Sync>, LogFilterError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = LogFilter::parse(directives)?;
    Ok(fmt_layer(format, writer).with_filter(filter).boxed())
}

/// The layer that formats and writes log lines, without a filter of its own: filtered by
/// [`log_layer`], or left to a global [`LogFilter`] when that one decides for every layer.
pub(crate) fn fmt_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    // No colour codes: logs are read by collectors and grep as often as by people.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    match format {
        LogFormat::Text => layer
            .event_format(WithTraceIds(format::format().with_ansi(false)))
            .boxed(),
        LogFormat::Json => layer
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLine)
            .boxed(),
    }
}

/// The log filter: an [`EnvFilter`] that is told about spans only when its directives need it.
///
/// An `EnvFilter` keeps a table of the spans that its span and field directives
/// (`target[span{field=value}]=level`) may match, and takes a lock on that table whenever any
/// span is created, entered, exited, recorded or closed, even when no directive names a span or
/// a field and the table is always empty. Directives without `[` are all static (target and
/// level only), and then the filter's decisions never depend on spans: they are left out.
///
/// It is a per-layer [`Filter`] of the log layer, or, when it lets through everything the
/// tracing layer wants ([`LogFilter::lets_info_through`]), a global filter ([`Layer`]) for the
/// whole subscriber.
pub(crate) struct LogFilter {
    filter: EnvFilter,
    /// The directives, as parsed.
    directives: String,
    /// Whether some directive names a span or a field.
    dynamic: bool,
}

impl LogFilter {
    pub(crate) fn parse(directives: &str) -> Result<Self, LogFilterError> {
        let filter = EnvFilter::builder()
            .parse(directives)
            .map_err(|source| LogFilterError {
                directives: directives.to_owned(),
                source,
            })?;
        Ok(Self {
            filter,
            directives: directives.to_owned(),
            dynamic: directives.contains('['),
        })
    }

    /// Whether these directives enable every span and event at INFO and above of `targets` and
    /// their modules, deciding by target and level alone (no span or field directive). Then a
    /// tracing layer that wants exactly those spans needs no filter of its own: this one, as a
    /// global filter, lets them all through. Conservative: a directive that names a target
    /// overlapping one of `targets` must enable INFO, and so must the default level (or a
    /// directive naming a prefix of each target).
    pub(crate) fn lets_info_through(&self, targets: &[String]) -> bool {
        if self.dynamic {
            return false;
        }
        let mut default_info = false;
        let mut covered = vec![false; targets.len()];
        for directive in self.directives.split(',').map(str::trim) {
            if directive.is_empty() {
                continue;
            }
            let (target, level) = match directive.split_once('=') {
                Some((target, level)) => (Some(target.trim()), level.trim()),
                None if directive.parse::<LevelFilter>().is_ok() => (None, directive),
                // A bare target enables everything of it.
                None => (Some(directive), "trace"),
            };
            let Ok(level) = level.parse::<LevelFilter>() else {
                return false;
            };
            let info = level >= LevelFilter::INFO;
            let Some(target) = target else {
                default_info = info;
                continue;
            };
            for (index, traced) in targets.iter().enumerate() {
                if traced.starts_with(target) || target.starts_with(traced.as_str()) {
                    if !info {
                        return false;
                    }
                    covered[index] |= traced.starts_with(target);
                }
            }
        }
        default_info || covered.iter().all(|covered| *covered)
    }
}

/// As the global filter of a subscriber whose directives name no span or field.
impl<S> Layer<S> for LogFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&self.filter, metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, cx: Context<'_, S>) -> bool {
        Layer::enabled(&self.filter, metadata, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.filter)
    }
}

impl<S> Filter<S> for LogFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Filter::enabled(&self.filter, metadata, cx)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        Filter::<S>::callsite_enabled(&self.filter, metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.filter)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        if self.dynamic {
            Filter::on_new_span(&self.filter, attrs, id, cx);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: Context<'_, S>) {
        if self.dynamic {
            Filter::on_record(&self.filter, id, values, cx);
        }
    }

    fn on_enter(&self, id: &Id, cx: Context<'_, S>) {
        if self.dynamic {
            Filter::on_enter(&self.filter, id, cx);
        }
    }

    fn on_exit(&self, id: &Id, cx: Context<'_, S>) {
        if self.dynamic {
            Filter::on_exit(&self.filter, id, cx);
        }
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        if self.dynamic {
            Filter::on_close(&self.filter, id, cx);
        }
    }
}

/// The OpenTelemetry ids of the span an event happens in, if it has any (they print as the
/// lower-case hex the W3C trace context uses).
pub(crate) fn event_trace_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(TraceId, SpanId)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    // Without an exporter the ids are kept on the spans themselves.
    if let Some(ids) = ctx.event_scope().and_then(crate::local_trace::ids_in_scope) {
        return Some(ids);
    }
    // The OpenTelemetry layer activates a span's context whenever the span is entered.
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| (span_context.trace_id(), span_context.span_id()))
}

/// Wraps tracing-subscriber's text format and adds ` trace_id=… span_id=…` to each line.
struct WithTraceIds<F>(F);

impl<S, N> FormatEvent<S, N> for WithTraceIds<Format<Full>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = event_trace_ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        writeln!(writer, "{line} trace_id={trace_id} span_id={span_id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lets_through(directives: &str) -> bool {
        let targets = crate::config::DEFAULT_TRACED_TARGETS.map(str::to_owned);
        LogFilter::parse(directives)
            .unwrap()
            .lets_info_through(&targets)
    }

    #[test]
    fn the_log_filter_decides_alone_only_when_it_lets_every_traced_span_through() {
        assert!(lets_through(crate::config::DEFAULT_LOG_FILTER));
        assert!(lets_through("info"));
        assert!(lets_through("debug,h2=warn"));
        assert!(lets_through(
            "warn,order_service=info,status_client=debug,order_status_telemetry"
        ));
        // Quieter than INFO for a traced target or one of its modules, by default or by name.
        assert!(!lets_through("warn"));
        assert!(!lets_through("warn,status_client=info"));
        assert!(!lets_through("info,order_service::store=warn"));
        assert!(!lets_through("info,order=warn"));
        assert!(!lets_through("off"));
        // Span and field directives need per-layer filtering.
        assert!(!lets_through("info,order_service[grpc.server]=debug"));
    }
}
