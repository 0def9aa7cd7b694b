//! Export behaviour: nothing leaves the process without an endpoint, and a collector that
//! is down neither fails nor holds up calls; the spans it loses are counted.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{OtlpReceiver, TestServer, check, client, config, subscriber};
use order_status_telemetry::Telemetry;

#[tokio::test]
async fn nothing_is_exported_without_an_endpoint() {
    // A receiver on the OTLP default port catches an exporter that falls back to it.
    let default_port: SocketAddr = "127.0.0.1:4317".parse().unwrap();
    let receiver = match OtlpReceiver::start_on(default_port, None).await {
        Ok(receiver) => Some(receiver),
        Err(error) => {
            eprintln!("port 4317 is taken ({error}); checking only that no export was tried");
            None
        }
    };
    let telemetry = Telemetry::build(&config(None)).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let server = TestServer::start(telemetry.metrics()).await;
    let mut client = client(server.uri(), telemetry.metrics());
    for _ in 0..3 {
        client.check(check("")).await.unwrap();
    }
    telemetry.force_flush().await.unwrap();
    let text = telemetry.exposition().render().unwrap();
    assert!(
        !text.contains("telemetry_spans_dropped"),
        "an export was tried:\n{text}"
    );
    telemetry.shutdown().await.unwrap();
    if let Some(receiver) = receiver {
        assert_eq!(receiver.trace_exports(), 0);
        assert_eq!(receiver.metric_exports(), 0);
    }
}

#[tokio::test]
async fn a_stopped_collector_fails_no_call_and_lost_spans_are_counted() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let server = TestServer::start(telemetry.metrics()).await;
    let mut client = client(server.uri(), telemetry.metrics());
    client.check(check("")).await.unwrap();
    telemetry.force_flush().await.unwrap();
    receiver
        .wait_for_spans(Duration::from_secs(10), |spans| spans.len() >= 2)
        .await
        .unwrap();

    receiver.stop().await;
    for _ in 0..20 {
        client.check(check("")).await.unwrap();
    }
    // Delivering to a stopped collector fails; the calls above did not wait for it.
    telemetry.force_flush().await.unwrap_err();
    let text = telemetry.exposition().render().unwrap();
    let dropped = text
        .lines()
        .find(|line| {
            line.starts_with("telemetry_spans_dropped_total{")
                && line.contains("reason=\"export_failed\"")
        })
        .unwrap_or_else(|| panic!("no dropped-span count in:\n{text}"));
    let count: f64 = dropped.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 40.0, "20 calls make 40 spans, all lost: {dropped}");
    // Shutting down still returns (with the loss reported), it does not hang.
    telemetry.shutdown().await.unwrap_err();
}
