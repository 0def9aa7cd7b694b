//! Trace context without OpenTelemetry spans, for a process that exports no traces.
//!
//! With no traces endpoint nothing would ever read an OpenTelemetry span, yet the
//! tracing-opentelemetry layer builds one for every tracing span (a span builder, every field
//! turned into an attribute, every event inside it copied as a span event, the context attached
//! on every poll) and drops it when the span closes. What such a process still needs from
//! tracing is the *context*: the W3C trace and span ids its log lines carry, the caller's trace
//! continued from `traceparent`, and `traceparent`/`tracestate`/`baggage` passed on to the
//! calls it makes. [`LocalTraceLayer`] gives each span of the traced targets just that: an
//! OpenTelemetry [`Context`] holding a non-recording span context (a fresh span id, the
//! parent's trace id or a new one, the sampling flag the configured sampler gives), built once
//! when the span opens and read when a log line or an outgoing call asks for it.

use std::marker::PhantomData;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// The trace context of one span, kept in its extensions.
#[derive(Debug, Clone)]
pub(crate) struct LocalSpan {
    /// This span's ids, sampling flag and trace state.
    span_context: SpanContext,
    /// The parent's context (its baggage included) with `span_context` active.
    context: Context,
}

impl LocalSpan {
    fn new(span_context: SpanContext, parent: &Context) -> Self {
        Self {
            context: parent.with_remote_span_context(span_context.clone()),
            span_context,
        }
    }
}

/// Gives the spans it sees a [`LocalSpan`]; see the module documentation.
pub(crate) struct LocalTraceLayer<S> {
    sampler: Sampler,
    ids: RandomIdGenerator,
    /// The spans it gives a context to, when it is not behind a per-layer filter that already
    /// chose them (see [`LocalTraceLayer::choosing`]).
    targets: Option<Targets>,
    _subscriber: PhantomData<fn(S)>,
}

impl<S> LocalTraceLayer<S> {
    /// A layer for behind a per-layer filter: every span it is shown gets a context.
    pub(crate) fn new(sampler: Sampler) -> Self {
        Self {
            sampler,
            ids: RandomIdGenerator::default(),
            targets: None,
            _subscriber: PhantomData,
        }
    }

    /// A layer that picks the spans of `targets` itself, for a subscriber whose global filter
    /// lets all of them through: without a per-layer filter, entering, exiting and recording a
    /// span cost no per-layer lookups of the span (this layer has nothing to do then).
    pub(crate) fn choosing(sampler: Sampler, targets: Targets) -> Self {
        Self {
            targets: Some(targets),
            ..Self::new(sampler)
        }
    }
}

/// A span context for a new span under `parent`: the parent's trace (or a new one), a new span
/// id, sampled as the sampler decides.
fn child_span(
    sampler: &Sampler,
    ids: &RandomIdGenerator,
    parent: &Context,
    name: &str,
) -> LocalSpan {
    let parent_span = parent.span();
    let parent_span_context = parent_span.span_context();
    let trace_id = if parent_span_context.is_valid() {
        parent_span_context.trace_id()
    } else {
        ids.new_trace_id()
    };
    let sampled = sampled(sampler, parent, trace_id, name);
    let span_context = SpanContext::new(
        trace_id,
        ids.new_span_id(),
        if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        false,
        parent_span_context.trace_state().clone(),
    );
    LocalSpan::new(span_context, parent)
}

fn sampled(sampler: &Sampler, parent: &Context, trace_id: TraceId, name: &str) -> bool {
    // The common cases without asking the sampler (which builds a result with attributes).
    match sampler {
        Sampler::AlwaysOn => return true,
        Sampler::AlwaysOff => return false,
        Sampler::ParentBased(_) if parent.span().span_context().is_valid() => {
            return parent.span().span_context().is_sampled();
        }
        _ => {}
    }
    let result = sampler.should_sample(Some(parent), trace_id, name, &SpanKind::Internal, &[], &[]);
    matches!(result.decision, SamplingDecision::RecordAndSample)
}

impl<S> tracing_subscriber::Layer<S> for LocalTraceLayer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let metadata = attrs.metadata();
        if let Some(targets) = &self.targets
            && !targets.would_enable(metadata.target(), metadata.level())
        {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        // The nearest enclosing span with a context (spans of other targets are skipped over),
        // else whatever OpenTelemetry context is active on this thread.
        let parent = span
            .scope()
            .skip(1)
            .find_map(|parent| parent.extensions().get::<LocalSpan>().cloned());
        let name = attrs.metadata().name();
        let local = match parent {
            Some(parent) => child_span(&self.sampler, &self.ids, &parent.context, name),
            None => child_span(&self.sampler, &self.ids, &Context::current(), name),
        };
        span.extensions_mut().insert(local);
    }
}

/// Runs `f` on the [`LocalSpan`] of `span`, if the current subscriber is a registry with a
/// [`LocalTraceLayer`] that gave it one.
fn with_local_span<R>(span: &tracing::Span, f: impl FnOnce(&mut LocalSpan) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch): (&Id, &Dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        let mut extensions = span.extensions_mut();
        extensions.get_mut::<LocalSpan>().map(f)
    })
    .flatten()
}

/// The context of `span` (its ids active, its parent's baggage), when a [`LocalTraceLayer`]
/// keeps it.
pub(crate) fn context_of(span: &tracing::Span) -> Option<Context> {
    with_local_span(span, |local| local.context.clone())
}

/// Makes `parent` (a caller's context) the parent of `span`, when a [`LocalTraceLayer`] keeps
/// its context; returns whether one did. Call it before `span` has children.
pub(crate) fn set_parent(span: &tracing::Span, parent: &Context) -> bool {
    // The sampler of the layer is not reachable from here; a remote parent's decision is
    // followed, which is what every parent-based sampler (the default) does.
    with_local_span(span, |local| {
        let parent_span = parent.span();
        let remote = parent_span.span_context();
        let span_context = if remote.is_valid() {
            SpanContext::new(
                remote.trace_id(),
                local.span_context.span_id(),
                remote.trace_flags(),
                false,
                remote.trace_state().clone(),
            )
        } else {
            local.span_context.clone()
        };
        *local = LocalSpan::new(span_context, parent);
    })
    .is_some()
}

/// The trace and span ids of the nearest span in `scope` (innermost first) that has a
/// [`LocalSpan`].
pub(crate) fn ids_in_scope<'a, R>(
    mut scope: impl Iterator<Item = SpanRef<'a, R>>,
) -> Option<(TraceId, SpanId)>
where
    R: LookupSpan<'a> + 'a,
{
    scope.find_map(|span| {
        span.extensions()
            .get::<LocalSpan>()
            .map(|local| (local.span_context.trace_id(), local.span_context.span_id()))
    })
}
