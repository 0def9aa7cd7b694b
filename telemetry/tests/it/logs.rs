//! Every log line made inside a span carries the `trace_id` and `span_id` of that span, in
//! JSON and in text, and they are the ids the exported span has.

use crate::common;

use std::time::Duration;

use common::{CapturedLogs, OtlpReceiver, config};
use order_status_telemetry::{LogFormat, Telemetry, log_layer};
use tracing_subscriber::layer::SubscriberExt;

async fn log_inside_a_span(format: LogFormat) -> (Vec<String>, OtlpReceiver) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::registry()
        .with(log_layer(format, "info", logs.clone()).unwrap())
        .with(telemetry.tracing_layer());
    {
        let _default = tracing::subscriber::set_default(subscriber);
        tracing::info!(target: "order_service", "outside any span");
        let span = tracing::info_span!(target: "order_service", "create_order");
        span.in_scope(
            || tracing::info!(target: "order_service", order_id = "o-1", "order created"),
        );
    }
    telemetry.force_flush().await.unwrap();
    receiver
        .wait_for_span(Duration::from_secs(10), |span| span.name == "create_order")
        .await
        .unwrap();
    telemetry.shutdown().await.unwrap();
    (logs.lines(), receiver)
}

#[tokio::test]
async fn json_lines_inside_a_span_carry_its_ids() {
    let (lines, receiver) = log_inside_a_span(LogFormat::Json).await;
    let span = &receiver.spans()[0];
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let outside = parsed
        .iter()
        .find(|line| line["message"] == "outside any span")
        .unwrap();
    assert!(outside.get("trace_id").is_none());
    let inside = parsed
        .iter()
        .find(|line| line["message"] == "order created")
        .unwrap();
    assert_eq!(inside["trace_id"], span.trace_id.as_str());
    assert_eq!(inside["span_id"], span.span_id.as_str());
    assert_eq!(inside["order_id"], "o-1");
    assert_eq!(inside["level"], "INFO");
}

#[tokio::test]
async fn text_lines_inside_a_span_carry_its_ids() {
    let (lines, receiver) = log_inside_a_span(LogFormat::Text).await;
    let span = &receiver.spans()[0];
    let inside = lines
        .iter()
        .find(|line| line.contains("order created"))
        .unwrap();
    assert!(
        inside.ends_with(&format!(
            "trace_id={} span_id={}",
            span.trace_id, span.span_id
        )),
        "{inside}"
    );
    let outside = lines
        .iter()
        .find(|line| line.contains("outside any span"))
        .unwrap();
    assert!(!outside.contains("trace_id="), "{outside}");
}

#[test]
fn json_lines_carry_the_span_fields_recorded_so_far_and_escape_every_value() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::registry()
        .with(log_layer(LogFormat::Json, "info", logs.clone()).unwrap());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(
            target: "order_service",
            "grpc.server",
            rpc.method = "GetOrder",
            attempt = 2_u64,
            principal = tracing::field::Empty,
            code = tracing::field::Empty,
        );
        span.record("principal", "writer \"one\"");
        span.record("code", "OK");
        // An explicit parent, as the access line has: the span's fields without entering it.
        tracing::info!(
            target: "order_service",
            parent: &span,
            latency_ms = 0.25,
            ok = true,
            note = "line\nbreak\ttab \\ \u{1}",
            "call finished"
        );
        tracing::info!(target: "order_service", "no fields, no span");
    });
    let lines = logs.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let call: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(call["message"], "call finished");
    assert_eq!(call["level"], "INFO");
    assert_eq!(call["target"], "order_service");
    assert_eq!(call["latency_ms"], 0.25);
    assert_eq!(call["ok"], true);
    assert_eq!(call["note"], "line\nbreak\ttab \\ \u{1}");
    assert_eq!(
        call["span"],
        serde_json::json!({
            "rpc.method": "GetOrder",
            "attempt": 2,
            "principal": "writer \"one\"",
            "code": "OK",
            "name": "grpc.server",
        })
    );
    assert!(call["timestamp"].as_str().unwrap().ends_with('Z'), "{call}");
    let plain: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(plain["message"], "no fields, no span");
    assert!(plain.get("span").is_none(), "{plain}");
}

/// With no exporter the spans are not OpenTelemetry spans, yet every line made in one still
/// carries its ids, a caller's `traceparent` is continued and passed on to outgoing calls.
#[test]
fn without_an_exporter_lines_carry_ids_and_the_callers_trace_goes_on() {
    use order_status_telemetry::propagation::{continue_trace_from, inject_current};

    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let telemetry = Telemetry::build(&config(None)).unwrap();
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::registry()
        .with(log_layer(LogFormat::Json, "info", logs.clone()).unwrap())
        .with(telemetry.tracing_layer());
    let mut outgoing = http::HeaderMap::new();
    tracing::subscriber::with_default(subscriber, || {
        let mut incoming = http::HeaderMap::new();
        incoming.insert(
            "traceparent",
            format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        let call = tracing::info_span!(target: "order_service", "grpc.server");
        assert!(continue_trace_from(&call, &incoming));
        call.in_scope(|| {
            tracing::info!(target: "order_service", "in the call");
            inject_current(&mut outgoing);
            tracing::info_span!(target: "order_service", "store")
                .in_scope(|| tracing::info!(target: "order_service", "in the store"));
        });
        let own = tracing::info_span!(target: "order_service", "another call");
        own.in_scope(|| tracing::info!(target: "order_service", "in another call"));
        tracing::info!(target: "order_service", "outside any span");
    });
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let line = |message: &str| {
        lines
            .iter()
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| panic!("no line {message:?} in {lines:?}"))
    };
    let (call, store) = (line("in the call"), line("in the store"));
    assert_eq!(call["trace_id"], CALLER_TRACE);
    assert_eq!(store["trace_id"], CALLER_TRACE);
    let call_span = call["span_id"].as_str().unwrap();
    assert_eq!(call_span.len(), 16, "{call}");
    assert_ne!(
        call_span, "00f067aa0ba902b7",
        "the call has a span id of its own"
    );
    assert_ne!(store["span_id"], call_span, "{store}");
    assert_eq!(
        outgoing["traceparent"],
        format!("00-{CALLER_TRACE}-{call_span}-01").as_str()
    );
    let other = line("in another call");
    let other_trace = other["trace_id"].as_str().unwrap();
    assert!(
        other_trace.len() == 32 && other_trace != CALLER_TRACE,
        "{other}"
    );
    assert!(line("outside any span").get("trace_id").is_none());
}
