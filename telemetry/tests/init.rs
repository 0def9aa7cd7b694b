//! `init_with` as a binary uses it: globals installed once per process (hence one test in
//! this file), spans delivered by `shutdown` alone (the CLI's last step), the global
//! propagator writing W3C headers, and the SDK's own span-processor counts in `/metrics`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{OtlpReceiver, config};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_installs_globals_and_shutdown_flushes() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = order_status_telemetry::init_with(&config(Some(receiver.endpoint()))).unwrap();
    assert!(
        order_status_telemetry::init_with(&config(None)).is_err(),
        "a second global subscriber is refused"
    );

    let span = tracing::info_span!(target: "status_client", "cli.get");
    let trace_id = span.context().span().span_context().trace_id().to_string();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&span.context(), &mut carrier)
    });
    assert!(carrier["traceparent"].contains(&trace_id), "{carrier:?}");
    drop(span);

    telemetry.force_flush().await.unwrap();
    let text = telemetry.exposition().render().unwrap();
    assert!(
        text.contains("otel_sdk_processor_span_processed_total"),
        "{text}"
    );

    tracing::info_span!(target: "status_client", "cli.exit").in_scope(|| {});
    // No flush: shutdown alone must deliver the last span.
    telemetry.shutdown().await.unwrap();
    let spans = receiver
        .wait_for_spans(Duration::from_secs(10), |spans| {
            spans.iter().any(|span| span.name == "cli.exit")
        })
        .await
        .unwrap();
    assert!(
        spans
            .iter()
            .any(|span| span.name == "cli.get" && span.trace_id == trace_id)
    );
}
