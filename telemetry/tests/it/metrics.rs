//! `/metrics` is valid Prometheus text whose counters move with the calls made, served by
//! `serve_metrics` over real HTTP; the same metrics go out over OTLP when an endpoint is set.

use crate::common;

use std::time::Duration;

use common::{OtlpReceiver, TestServer, check, client, config, subscriber};
use order_status_telemetry::{METRICS_PATH, PROMETHEUS_CONTENT_TYPE, Telemetry, serve_metrics};
use prometheus_parse::{LineInfo, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Parses `text`, first insisting that every line is a comment, a sample or empty (the
/// parser alone skips lines it does not understand).
fn parse(text: &str) -> Scrape {
    for line in text.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "not Prometheus text: {line:?}"
        );
    }
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap()
}

/// The value of the sample `metric` whose labels include all of `labels`.
fn sample(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == metric
                && labels
                    .iter()
                    .all(|(name, value)| sample.labels.get(name) == Some(value))
        })
        .map(|sample| match &sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => *value,
            Value::Histogram(buckets) => buckets
                .iter()
                .map(|bucket| bucket.count)
                .fold(0.0, f64::max),
            Value::Summary(_) => panic!("no summaries are made"),
        })
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn a_metrics_connection_that_sends_nothing_is_closed() {
    let telemetry = Telemetry::build(&config(None)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    tokio::spawn(serve_metrics(
        listener,
        telemetry.exposition(),
        std::future::pending(),
    ));
    let mut silent = TcpStream::connect(metrics_addr).await.unwrap();
    // The server's header read timeout is 10 s; without one it waits forever.
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "a connection that sent nothing is still open after 30 s"
    );
    // The server still answers others.
    assert!(
        http_get(metrics_addr, METRICS_PATH)
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn metrics_endpoint_serves_valid_text_whose_counters_follow_the_calls() {
    let telemetry = Telemetry::build(&config(None)).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let server = TestServer::start(telemetry.metrics()).await;
    let mut client = client(server.uri(), telemetry.metrics());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(serve_metrics(listener, telemetry.exposition(), async {
        let _ = stopped.await;
    }));

    let ok = [("rpc_method", "Check"), ("rpc_grpc_status_code", "0")];
    let not_found = [("rpc_method", "Check"), ("rpc_grpc_status_code", "5")];
    for _ in 0..3 {
        client.check(check("")).await.unwrap();
    }
    client.check(check("no.such.Service")).await.unwrap_err();
    let metrics = telemetry.metrics();
    metrics.record_retry("GetOrder", tonic::Code::Unavailable);
    metrics.record_throttled_retry("GetOrder");
    metrics.record_idempotent_replay("CreateOrder");
    let watch = metrics.watch_stream_opened();
    metrics.record_watch_event_sent();
    metrics.record_store_operation("create_order", Duration::from_millis(3), true);

    let response = http_get(metrics_addr, METRICS_PATH).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {PROMETHEUS_CONTENT_TYPE}"))
    );
    let first = parse(body);

    assert_eq!(
        sample(&first, "rpc_server_call_duration_seconds_count", &ok),
        Some(3.0)
    );
    assert_eq!(
        sample(&first, "rpc_server_call_duration_seconds_count", &not_found),
        Some(1.0)
    );
    assert_eq!(
        sample(&first, "rpc_client_call_duration_seconds_count", &ok),
        Some(3.0)
    );
    assert_eq!(
        sample(&first, "rpc_client_call_duration_seconds_count", &not_found),
        Some(1.0)
    );
    assert_eq!(
        sample(&first, "rpc_server_call_duration_seconds", &ok),
        Some(3.0),
        "histogram buckets"
    );
    assert_eq!(
        sample(
            &first,
            "rpc_server_active_calls",
            &[("rpc_method", "Check")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &first,
            "rpc_client_active_calls",
            &[("rpc_method", "Check")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &first,
            "rpc_client_retries_total",
            &[("rpc_grpc_status_code", "14")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&first, "rpc_client_retries_throttled_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &first,
            "orders_idempotent_replays_total",
            &[("rpc_method", "CreateOrder")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&first, "orders_watch_streams_active", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&first, "orders_watch_events_sent_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &first,
            "orders_store_operation_duration_seconds_count",
            &[("db_operation_name", "create_order"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert!(
        first.docs.contains_key("rpc_server_call_duration_seconds"),
        "HELP lines present"
    );

    client.check(check("")).await.unwrap();
    drop(watch);
    let second = parse(&telemetry.exposition().render().unwrap());
    assert_eq!(
        sample(&second, "rpc_server_call_duration_seconds_count", &ok),
        Some(4.0)
    );
    assert_eq!(
        sample(&second, "orders_watch_streams_active", &[]),
        Some(0.0)
    );

    let missing = http_get(metrics_addr, "/other").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    stop.send(()).unwrap();
    metrics_server.await.unwrap();
}

#[tokio::test]
async fn metrics_are_exported_over_otlp_when_an_endpoint_is_set() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let server = TestServer::start(telemetry.metrics()).await;
    client(server.uri(), telemetry.metrics())
        .check(check(""))
        .await
        .unwrap();
    telemetry.force_flush().await.unwrap();
    receiver
        .wait_for_metric(Duration::from_secs(10), "rpc.server.call.duration")
        .await
        .unwrap();
    assert!(receiver.metric_names().contains("rpc.client.call.duration"));
    telemetry.shutdown().await.unwrap();
}
