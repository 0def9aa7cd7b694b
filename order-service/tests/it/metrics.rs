//! `/metrics` on the metrics address: valid Prometheus text whose counters follow the calls.

use crate::support;

use orders_proto::v1 as pb;
use std::net::SocketAddr;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET /metrics over a plain TCP connection, parsed as Prometheus text.
pub(crate) async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    // A body that is not line-by-line valid exposition text is a failure, not a partial parse.
    let lines: Vec<std::io::Result<String>> = body.lines().map(|l| Ok(l.to_owned())).collect();
    prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid Prometheus text")
}

/// The value of `name` (a counter, gauge or histogram `_count`) for samples matching `labels`.
pub(crate) fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_and_follow_the_calls() {
    let server = TestServer::start_with(&["--metrics-addr", "127.0.0.1:0"]).await;
    let metrics = server.metrics_addr.expect("metrics address bound");
    let mut client = server.client().await;

    let order = client
        .create_order(authed(new_order("m", "metrics-1"), WRITER))
        .await
        .unwrap()
        .into_inner();
    client
        .create_order(authed(new_order("m", "metrics-1"), WRITER))
        .await
        .unwrap(); // a replay
    for _ in 0..3 {
        client
            .get_order(authed(
                pb::GetOrderRequest {
                    order_id: order.order_id.clone(),
                },
                READER,
            ))
            .await
            .unwrap();
    }
    let missing = client
        .get_order(authed(
            pb::GetOrderRequest {
                order_id: "ord_none".into(),
            },
            READER,
        ))
        .await;
    assert!(missing.is_err());
    let mut watch = client
        .watch_orders(authed(
            pb::WatchOrdersRequest {
                order_id: order.order_id.clone(),
                after_sequence: 0,
            },
            READER,
        ))
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();

    let first = scrape(metrics).await;
    let calls = |method: &str, code: &str| {
        value(
            &first,
            "rpc_server_call_duration_seconds_count",
            &[("rpc_method", method), ("rpc_grpc_status_code", code)],
        )
    };
    assert_eq!(calls("GetOrder", "0"), 3.0);
    assert_eq!(calls("GetOrder", "5"), 1.0, "NOT_FOUND is code 5");
    assert_eq!(calls("CreateOrder", "0"), 2.0);
    assert_eq!(
        value(
            &first,
            "orders_idempotent_replays_total",
            &[("rpc_method", "CreateOrder")]
        ),
        1.0
    );
    assert_eq!(value(&first, "orders_watch_streams_active", &[]), 1.0);
    assert_eq!(value(&first, "orders_watch_events_sent_total", &[]), 1.0);
    assert!(
        value(
            &first,
            "orders_store_operation_duration_seconds_count",
            &[("db_operation_name", "get_order"), ("outcome", "ok")]
        ) >= 4.0
    );

    // Counters move: three more reads, and the watch closes.
    for _ in 0..3 {
        client
            .get_order(authed(
                pb::GetOrderRequest {
                    order_id: order.order_id.clone(),
                },
                READER,
            ))
            .await
            .unwrap();
    }
    drop(watch);
    let later = scrape(metrics).await;
    assert_eq!(
        value(
            &later,
            "rpc_server_call_duration_seconds_count",
            &[("rpc_method", "GetOrder"), ("rpc_grpc_status_code", "0")]
        ),
        6.0
    );
}
