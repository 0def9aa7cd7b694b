//! `/metrics` of both real binaries (order-service on `ORDER_SERVICE_METRICS_ADDR`,
//! `status-client serve` on its HTTP port) is valid Prometheus text, checked with a parser,
//! and its counters move with the calls made; with an endpoint set the same metrics go out
//! over OTLP.

use crate::telemetry_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use order_status_tests::lossy_proxy::LossyProxy;
use order_status_tests::order_service_process::{
    OrderServiceProcess, WRITER_TOKEN, unused_local_addr,
};
use order_status_tests::otlp_receiver::OtlpReceiver;
use order_status_tests::status_client_process::{
    HttpResponse, ServeProcess, StatusClientCli, http_request,
};
use prometheus_parse::Scrape;
use telemetry_support::{PATIENCE, as_pairs, has_metric, sample, scrape, with_env};

const AUTHORIZATION: &str = "Bearer writer-token-for-tests";

async fn call(serve: &ServeProcess, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    call_with(serve.addr(), method, path, &[], body).await
}

async fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    let mut headers = vec![("authorization", AUTHORIZATION)];
    headers.extend_from_slice(extra);
    http_request(addr, method, path, &headers, body)
        .await
        .unwrap()
}

/// How much `metric{labels}` grew from `before` to `after`.
fn growth(before: &Scrape, after: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sample(after, metric, labels) - sample(before, metric, labels)
}

/// Scrapes `addr` until `ready` holds for its metrics (for values that change when the other
/// side notices something, such as a closed stream); panics after [`PATIENCE`].
async fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = scrape(addr).await;
        if ready(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        // Metrics offer no change notification: poll.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn both_services_serve_prometheus_text_whose_counters_follow_the_calls() {
    let metrics_addr = unused_local_addr().unwrap();
    let server = OrderServiceProcess::start_with_env(&[(
        "ORDER_SERVICE_METRICS_ADDR",
        &metrics_addr.to_string(),
    )])
    .await
    .unwrap();
    // serve's first replica refuses connections, so its first call is retried.
    let dead = unused_local_addr().unwrap();
    let serve = ServeProcess::start_with(StatusClientCli::new(
        format!("http://{dead},{}", server.url()),
        None,
    ))
    .await
    .unwrap();
    let server_before = scrape(metrics_addr).await;
    let serve_before = scrape(serve.addr()).await;
    assert!(
        has_metric(&server_before, "target_info"),
        "resource as target_info"
    );

    // Two creates with one idempotency key (the second is a replay), three gets, one miss.
    let body = r#"{"customerId":"metrics-1","currency":"EUR","items":[{"sku":"BOOK","quantity":2,"unitPriceCents":1250}]}"#;
    let key = [("idempotency-key", "metrics-test-key-1")];
    let created = call_with(serve.addr(), "POST", "/v1/orders", &key, Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let replayed = call_with(serve.addr(), "POST", "/v1/orders", &key, Some(body)).await;
    assert_eq!(replayed.status, 201, "{}", replayed.body);
    let id = created.json().unwrap()["orderId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(replayed.json().unwrap()["orderId"], id.as_str());
    for _ in 0..3 {
        let response = call(&serve, "GET", &format!("/v1/orders/{id}"), None).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    assert_eq!(
        call(&serve, "GET", "/v1/orders/missing", None).await.status,
        404
    );

    let server_after = scrape(metrics_addr).await;
    let serve_after = scrape(serve.addr()).await;

    // order-service: calls by method and code, replays, store latency.
    let server_calls = |method: &str, code: &str| {
        growth(
            &server_before,
            &server_after,
            "rpc_server_call_duration_seconds",
            &[
                ("rpc_service", "orders.v1.OrderService"),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
            ],
        )
    };
    assert_eq!(server_calls("CreateOrder", "0"), 2.0);
    assert_eq!(server_calls("GetOrder", "0"), 3.0);
    assert_eq!(server_calls("GetOrder", "5"), 1.0);
    assert_eq!(
        growth(
            &server_before,
            &server_after,
            "orders_idempotent_replays_total",
            &[("rpc_method", "CreateOrder")]
        ),
        1.0
    );
    assert!(
        growth(
            &server_before,
            &server_after,
            "orders_store_operation_duration_seconds",
            &[("db_operation_name", "get_order")]
        ) >= 3.0
    );
    assert!(
        growth(
            &server_before,
            &server_after,
            "orders_store_operation_duration_seconds",
            &[("db_operation_name", "create_order")]
        ) >= 1.0
    );
    assert!(has_metric(&server_after, "rpc_server_active_calls"));

    // serve: HTTP requests by route and status, attempts by method and code, the retry.
    let http = |method: &str, route: &str, status: &str| {
        growth(
            &serve_before,
            &serve_after,
            "http_server_request_duration_seconds",
            &[
                ("http_request_method", method),
                ("http_route", route),
                ("http_response_status_code", status),
            ],
        )
    };
    assert_eq!(http("POST", "/v1/orders", "201"), 2.0);
    assert_eq!(http("GET", "/v1/orders/{id}", "200"), 3.0);
    assert_eq!(http("GET", "/v1/orders/{id}", "404"), 1.0);
    let client_attempts = |method: &str, code: &str| {
        growth(
            &serve_before,
            &serve_after,
            "rpc_client_call_duration_seconds",
            &[
                ("rpc_service", "orders.v1.OrderService"),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
            ],
        )
    };
    assert_eq!(client_attempts("GetOrder", "0"), 3.0);
    assert_eq!(client_attempts("GetOrder", "5"), 1.0);
    assert_eq!(client_attempts("CreateOrder", "0"), 2.0);
    // The very first attempt went to the dead replica and was retried.
    assert!(client_attempts("CreateOrder", "14") >= 1.0);
    assert!(
        growth(
            &serve_before,
            &serve_after,
            "rpc_client_retries_total",
            &[
                ("rpc_method", "CreateOrder"),
                ("rpc_grpc_status_code", "14")
            ]
        ) >= 1.0
    );
    assert!(has_metric(&serve_after, "rpc_client_active_calls"));
    assert!(
        sample(
            &serve_after,
            "target_info",
            &[("service_name", "status-client")]
        ) == 1.0,
        "status-client's resource as target_info"
    );

    // Watch streams: open while a watch runs, events counted as they are sent.
    let cli = StatusClientCli::new(server.url(), Some(WRITER_TOKEN));
    let (mut watch, mut lines) = cli.spawn(&["watch", &id, "--output", "json"]).unwrap();
    let first = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.is_some(),
        "the watch prints the order's current state"
    );
    let streams = |metrics: &Scrape| sample(metrics, "orders_watch_streams_active", &[]);
    let events = |metrics: &Scrape| sample(metrics, "orders_watch_events_sent_total", &[]);
    let watching = scrape(metrics_addr).await;
    assert_eq!(streams(&watching), streams(&server_after) + 1.0);
    assert!(events(&watching) >= events(&server_after) + 1.0);
    assert_eq!(
        sample(
            &watching,
            "rpc_server_active_calls",
            &[("rpc_method", "WatchOrders")]
        ),
        1.0
    );
    let paid = call(
        &serve,
        "POST",
        &format!("/v1/orders/{id}/status"),
        Some(r#"{"status":"ORDER_STATUS_PAID"}"#),
    )
    .await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    let second = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(second.is_some_and(|line| line.contains("ORDER_STATUS_PAID")));
    let after_event = scrape(metrics_addr).await;
    assert!(events(&after_event) >= events(&watching) + 1.0);
    watch.kill().await.unwrap();
    scrape_until(metrics_addr, "watch stream counted as closed", |metrics| {
        streams(metrics) == streams(&server_after)
    })
    .await;

    assert!(serve.terminate().await.unwrap().success());
}

#[tokio::test]
async fn retries_refused_by_the_throttle_are_counted() {
    // Only a replica that accepts connections and hangs up: every attempt reaches it and
    // fails, the retry budget runs out, and later calls get no retries. (One that refuses
    // connections spends no budget: those attempts are retried until the deadline.)
    let hangs_up = LossyProxy::start(unused_local_addr().unwrap())
        .await
        .unwrap();
    let serve = ServeProcess::start_with(StatusClientCli::new(hangs_up.url(), None).timeout("1s"))
        .await
        .unwrap();
    let before = scrape(serve.addr()).await;
    for _ in 0..4 {
        let response = call(&serve, "GET", "/v1/orders/any", None).await;
        // UNAVAILABLE (or, if the deadline came first, DEADLINE_EXCEEDED).
        assert!(
            matches!(response.status, 503 | 504),
            "{} {}",
            response.status,
            response.body
        );
    }
    let after = scrape(serve.addr()).await;
    let retries = growth(
        &before,
        &after,
        "rpc_client_retries_total",
        &[("rpc_method", "GetOrder"), ("rpc_grpc_status_code", "14")],
    );
    let throttled = growth(
        &before,
        &after,
        "rpc_client_retries_throttled_total",
        &[("rpc_method", "GetOrder")],
    );
    assert!(retries >= 1.0, "retries {retries}");
    assert!(throttled >= 1.0, "throttled {throttled}");
    assert!(serve.terminate().await.unwrap().success());
}

#[tokio::test]
async fn the_same_metrics_go_out_over_otlp_when_an_endpoint_is_set() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200".to_owned()),
    ];
    let server = OrderServiceProcess::start_with_env(&as_pairs(&env))
        .await
        .unwrap();
    let serve = ServeProcess::start_with(with_env(StatusClientCli::new(server.url(), None), &env))
        .await
        .unwrap();
    let response = call(&serve, "GET", "/v1/orders/missing", None).await;
    assert_eq!(response.status, 404);
    for name in [
        "rpc.server.call.duration",
        "rpc.client.call.duration",
        "http.server.request.duration",
        "orders.store.operation.duration",
    ] {
        receiver
            .wait_for_metric(PATIENCE, name)
            .await
            .unwrap_or_else(|error| {
                panic!("{name}: {error}; received {:?}", receiver.metric_names())
            });
    }
    assert!(serve.terminate().await.unwrap().success());
}
