//! W3C `traceparent`/`tracestate` and `baggage` carried in HTTP headers (gRPC metadata is
//! HTTP/2 headers): extract the caller's context on the way in, inject ours on the way out.

use std::sync::LazyLock;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The propagator used everywhere in the project; the same one is installed globally by
/// [`crate::init`] for libraries that ask the global API.
static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(propagator);

/// Builds a propagator equal to the project's: W3C trace context plus baggage.
pub fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's trace context (and baggage) from incoming headers; an empty context when
/// the headers carry none or carry a malformed one (a new trace is then started).
pub fn extract_context(headers: &HeaderMap) -> Context {
    PROPAGATOR.extract(&HeaderExtractor(headers))
}

/// Writes `context` into outgoing headers, replacing any `traceparent` already there.
pub fn inject_context(context: &Context, headers: &mut HeaderMap) {
    PROPAGATOR.inject_context(context, &mut HeaderInjector(headers));
}

/// Writes the current span's context into outgoing headers: the tracing span when it is
/// known to OpenTelemetry, else whatever OpenTelemetry context is active.
pub fn inject_current(headers: &mut HeaderMap) {
    let from_span = context_of(&tracing::Span::current());
    let context = if from_span.span().span_context().is_valid() {
        from_span
    } else {
        Context::current()
    };
    inject_context(&context, headers);
}

/// The current span's W3C `traceparent`, when it belongs to a valid trace: what a write stores
/// with its event so that work the event causes later can link back to the write's trace.
pub fn current_traceparent() -> Option<String> {
    let mut headers = HeaderMap::new();
    inject_current(&mut headers);
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Adds to `span` a link to the span a stored `traceparent` names (a follows-from relation,
/// not a parent: the linked trace ended long ago). Returns whether it was a valid one.
pub fn link_to_traceparent(span: &tracing::Span, traceparent: &str) -> bool {
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(traceparent) else {
        return false;
    };
    headers.insert("traceparent", value);
    let linked = extract_context(&headers).span().span_context().clone();
    if !linked.is_valid() {
        return false;
    }
    span.add_link(linked);
    true
}

/// The OpenTelemetry context of `span`: its span context active, its parent's baggage; an
/// empty context when no tracing layer knows `span`.
pub fn context_of(span: &tracing::Span) -> Context {
    crate::local_trace::context_of(span).unwrap_or_else(|| span.context())
}

/// Makes `span` a child of the trace described by `headers` when they carry one.
/// Returns whether a valid remote parent was found.
pub fn continue_trace_from(span: &tracing::Span, headers: &HeaderMap) -> bool {
    // Most calls carry neither: two header lookups instead of building contexts to find out.
    if !headers.contains_key("traceparent") && !headers.contains_key("baggage") {
        return false;
    }
    let parent = extract_context(headers);
    let remote = parent.span().span_context().is_valid();
    if (remote || !parent.baggage().is_empty()) && !crate::local_trace::set_parent(span, &parent) {
        // Fails only when no OpenTelemetry layer is installed; then there is nothing to link.
        let _ = span.set_parent(parent);
    }
    remote
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn round_trip_through_headers() {
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let context = Context::new().with_remote_span_context(span_context);
        let mut headers = HeaderMap::new();
        inject_context(&context, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let extracted = extract_context(&headers);
        assert_eq!(
            extracted.span().span_context().trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
    }

    #[test]
    fn malformed_traceparent_starts_fresh() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-zz-yy-01"));
        assert!(!extract_context(&headers).span().span_context().is_valid());
    }
}
