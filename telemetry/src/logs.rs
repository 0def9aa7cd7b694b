//! Log lines on stderr, text or JSON, each one made inside a span carrying that span's
//! OpenTelemetry `trace_id` and `span_id` so logs and traces can be joined.

use std::fmt;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
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
    let filter = EnvFilter::builder()
        .parse(directives)
        .map_err(|source| LogFilterError {
            directives: directives.to_owned(),
            source,
        })?;
    // No colour codes: logs are read by collectors and grep as often as by people.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    Ok(match format {
        LogFormat::Text => layer
            .event_format(WithTraceIds(format::format().with_ansi(false)))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => layer
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLine)
            .with_filter(filter)
            .boxed(),
    })
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
