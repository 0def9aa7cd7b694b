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
