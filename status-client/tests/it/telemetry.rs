//! What the client's telemetry puts on the wire and in its metrics, in process against a
//! scripted order-service on a real socket: a `traceparent` of its own on every attempt of
//! one trace, the caller's `tracestate` and `baggage` passed on by `serve`, retries counted,
//! and `serve`'s `/metrics`.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use order_status_telemetry::{Telemetry, TelemetryConfig};
use orders_proto::v1::{CreateOrderRequest, LineItem, Order};
use status_client::retry::{RetryPolicy, ThrottleSettings};
use status_client::serve::{ServeSettings, serve};
use status_client::{CallOptions, Client, Settings};
use support::{Scripted, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Status;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Pipelines that export nothing, and a subscriber turning this thread's spans into
/// OpenTelemetry spans (the tests run on a current-thread runtime, so every task sees it).
fn telemetry() -> (Telemetry, tracing::subscriber::DefaultGuard) {
    let telemetry = Telemetry::build(&TelemetryConfig::new("status-client")).unwrap();
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    let guard = tracing::subscriber::set_default(subscriber);
    (telemetry, guard)
}

fn client(addr: SocketAddr, telemetry: &Telemetry) -> Client {
    let settings = Settings::from_endpoint_list(&format!("http://{addr}"))
        .unwrap()
        .with_token("t")
        .with_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            multiplier: 2.0,
        })
        .with_throttle(ThrottleSettings {
            max_tokens: 100.0,
            token_ratio: 1.0,
        });
    Client::with_metrics(settings, telemetry.metrics().clone()).unwrap()
}

fn request() -> CreateOrderRequest {
    CreateOrderRequest {
        customer_id: "c".into(),
        currency: "EUR".into(),
        items: vec![LineItem {
            sku: "BOOK".into(),
            quantity: 1,
            unit_price_cents: 100,
        }],
        ..Default::default()
    }
}

/// The (trace id, parent span id) of a `traceparent` value.
fn trace_parent(metadata: &tonic::metadata::MetadataMap) -> (String, String) {
    let value = metadata
        .get("traceparent")
        .expect("a traceparent on every attempt")
        .to_str()
        .unwrap();
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[3], "01", "sampled");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// Lines of Prometheus text for `metric` whose labels include every `label="value"` given.
fn metric_lines<'a>(text: &'a str, metric: &str, labels: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{metric}{{")) || line.starts_with(&format!("{metric} "))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .collect()
}

/// The value of the one line of `metric` with `labels`.
fn metric_value(text: &str, metric: &str, labels: &[&str]) -> f64 {
    let lines = metric_lines(text, metric, labels);
    assert_eq!(lines.len(), 1, "{metric} {labels:?} in:\n{text}");
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn every_attempt_carries_its_own_span_of_the_callers_trace_and_retries_are_counted() {
    let (telemetry, _guard) = telemetry();
    let script = Scripted::default();
    script.0.lock().unwrap().creates.extend([
        Err(Status::unavailable("first attempt fails")),
        Ok(Order {
            order_id: "o-1".into(),
            ..Default::default()
        }),
    ]);
    let client = client(start(script.clone()).await, &telemetry);

    let caller = tracing::info_span!(target: "status_client::tests", "caller");
    let order = client
        .create_order(request(), CallOptions::new())
        .instrument(caller)
        .await
        .unwrap();
    assert_eq!(order.order_id, "o-1");

    let metadata = script.0.lock().unwrap().create_metadata.clone();
    assert_eq!(metadata.len(), 2);
    let (first_trace, first_parent) = trace_parent(&metadata[0]);
    let (second_trace, second_parent) = trace_parent(&metadata[1]);
    assert_eq!(first_trace, second_trace, "both attempts are one trace");
    assert_ne!(
        first_parent, second_parent,
        "each attempt is its own span, the parent of the server's span"
    );

    let text = telemetry.exposition().render().unwrap();
    assert_eq!(
        metric_value(
            &text,
            "rpc_client_retries_total",
            &[
                r#"rpc_method="CreateOrder""#,
                r#"rpc_grpc_status_code="14""#
            ]
        ),
        1.0
    );
    for code in ["14", "0"] {
        assert_eq!(
            metric_value(
                &text,
                "rpc_client_call_duration_seconds_count",
                &[
                    r#"rpc_method="CreateOrder""#,
                    &format!(r#"rpc_grpc_status_code="{code}""#)
                ]
            ),
            1.0,
            "one attempt ended with code {code}"
        );
    }
}

/// Sends one HTTP/1.1 request and returns the whole response as text.
async fn http(addr: SocketAddr, head: &str, body: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head}\r\nHost: serve\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn serve_continues_the_callers_trace_with_its_trace_state_and_baggage() {
    let (telemetry, _guard) = telemetry();
    let script = Scripted::default();
    script.0.lock().unwrap().creates.push_back(Ok(Order {
        order_id: "o-2".into(),
        ..Default::default()
    }));
    let client = client(start(script.clone()).await, &telemetry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        client,
        ServeSettings {
            request_timeout: Duration::from_secs(5),
            metrics: Some(telemetry.exposition()),
            ..ServeSettings::new(Settings::from_endpoint_list("http://127.0.0.1:1").unwrap())
        },
        async {
            let _ = stopped.await;
        },
    ));

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = http(
        addr,
        &format!(
            "POST /v1/orders HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\n\
             traceparent: 00-{trace_id}-{caller_span}-01\r\ntracestate: vendor=opaque\r\n\
             baggage: tenant=acme"
        ),
        r#"{"customerId":"c","currency":"EUR","items":[{"sku":"BOOK","quantity":1,"unitPriceCents":100}]}"#,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let metadata = script.0.lock().unwrap().create_metadata.clone();
    assert_eq!(metadata.len(), 1);
    let (sent_trace, sent_parent) = trace_parent(&metadata[0]);
    assert_eq!(
        sent_trace, trace_id,
        "the caller's trace goes on to order-service"
    );
    assert_ne!(
        sent_parent, caller_span,
        "with status-client's attempt span as the parent"
    );
    assert_eq!(
        metadata[0].get("tracestate").map(|v| v.to_str().unwrap()),
        Some("vendor=opaque")
    );
    assert!(
        metadata[0]
            .get("baggage")
            .is_some_and(|v| v.to_str().unwrap().contains("tenant=acme")),
        "baggage passed on: {:?}",
        metadata[0].get("baggage")
    );

    let metrics = http(addr, "GET /metrics HTTP/1.1", "").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("content-type: text/plain"), "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            "http_server_request_duration_seconds_count",
            &[
                r#"http_request_method="POST""#,
                r#"http_route="/v1/orders""#,
                r#"http_response_status_code="201""#
            ]
        ),
        1.0
    );
    // Scrapes are not requests of the service.
    let again = http(addr, "GET /metrics HTTP/1.1", "").await;
    assert!(
        metric_lines(
            &again,
            "http_server_request_duration_seconds_count",
            &[r#"http_route="/metrics""#]
        )
        .is_empty()
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
