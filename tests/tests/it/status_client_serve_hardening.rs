//! `status-client serve` under load and abuse, against a real order-service: more event-stream
//! clients than order-service allows streams on one connection, callers that must never share
//! a watch, clients resuming from far back, oversized headers, idle and half-sent connections,
//! the connection cap, and JSON bodies on every error.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use order_status_tests::order_service_process::{OrderServiceProcess, READER_TOKEN, WRITER_TOKEN};
use order_status_tests::status_client_process::{
    HttpResponse, ServeProcess, SseEvent, SseStream, StatusClientCli, http_request,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EVENT_WAIT: Duration = Duration::from_secs(20);
/// The bound on waiting for a connection to be closed: a liveness bound, far above the
/// timeouts the tests configure, not a measure of speed.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn gateway_with(env: &[(&str, &str)]) -> (OrderServiceProcess, ServeProcess) {
    let server = OrderServiceProcess::start().await.unwrap();
    let mut cli = StatusClientCli::new(server.url(), None).timeout("5s");
    for (name, value) in env {
        cli = cli.env(name, value);
    }
    let serve = ServeProcess::start_with(cli).await.unwrap();
    (server, serve)
}

async fn create(addr: SocketAddr, customer: &str) -> Value {
    let auth = bearer(WRITER_TOKEN);
    let body = json!({
        "customerId": customer,
        "currency": "EUR",
        "items": [{"sku": "BOOK", "quantity": 1, "unitPriceCents": "100"}]
    })
    .to_string();
    let response = http_request(
        addr,
        "POST",
        "/v1/orders",
        &[("authorization", &auth)],
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 201, "{}", response.body);
    response.json().unwrap()
}

fn order_id(value: &Value) -> String {
    value["orderId"].as_str().unwrap().to_owned()
}

fn event_order_id(event: &SseEvent) -> String {
    let data: Value = serde_json::from_str(&event.data).unwrap();
    data["order"]["orderId"].as_str().unwrap().to_owned()
}

fn sequence(event: &SseEvent) -> u64 {
    event.id.as_deref().unwrap().parse().unwrap()
}

#[track_caller]
fn assert_json_error(response: &HttpResponse, status: u16, code: &str) -> Value {
    assert_eq!(response.status, status, "{}", response.body);
    assert!(
        response.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        response.headers
    );
    let body = response.json().unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// order-service allows 1,024 streams per HTTP/2 connection. With 1,100 event streams open
/// (600 on all orders with one token, 500 on 500 different orders), a `GET` is still answered
/// and an event reaches every client.
#[tokio::test]
async fn more_event_streams_than_one_connection_carries_starve_nothing() {
    let (_server, serve) = gateway_with(&[]).await;
    let addr = serve.addr();
    let orders: Vec<Value> = futures::stream::iter(0..500)
        .map(|i| async move { create(addr, &format!("many-{i}")).await })
        .buffered(32)
        .collect()
        .await;
    let auth = bearer(WRITER_TOKEN);
    let headers = [("authorization", auth.as_str())];

    let all_orders: Vec<SseStream> = futures::stream::iter(0..600)
        .map(|_| SseStream::open(addr, "/v1/events", &headers))
        .buffer_unordered(64)
        .map(Result::unwrap)
        .collect()
        .await;
    let one_order: Vec<(String, SseStream)> = futures::stream::iter(orders.iter().map(order_id))
        .map(|id| async move {
            let stream = SseStream::open(addr, &format!("/v1/orders/{id}/events"), &headers)
                .await
                .unwrap();
            (id, stream)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let refused = all_orders
        .iter()
        .map(|s| s.status)
        .chain(one_order.iter().map(|(_, s)| s.status))
        .filter(|&status| status != 200)
        .count();
    assert_eq!(refused, 0, "event streams were refused");

    // Each one-order stream starts with its order's current state.
    let one_order: Vec<(String, SseStream)> = futures::stream::iter(one_order)
        .map(|(id, mut stream)| async move {
            let current = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
            assert_eq!(event_order_id(&current), id);
            (id, stream)
        })
        .buffer_unordered(128)
        .collect()
        .await;

    // A unary call is not queued behind the streams.
    let id = order_id(&orders[0]);
    let got = http_request(
        addr,
        "GET",
        &format!("/v1/orders/{id}"),
        &[("authorization", &auth)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200, "{}", got.body);

    let new = order_id(&create(addr, "many-new").await);
    let received = futures::stream::iter(all_orders)
        .map(|mut stream| {
            let new = new.clone();
            async move {
                let event = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
                event_order_id(&event) == new
            }
        })
        .buffer_unordered(600)
        .filter(|&got| std::future::ready(got))
        .count()
        .await;
    assert_eq!(received, 600, "every all-orders stream gets the new order");

    let (first_id, mut first_stream) = one_order.into_iter().next().unwrap();
    let paid = http_request(
        addr,
        "POST",
        &format!("/v1/orders/{first_id}/status"),
        &[("authorization", &auth)],
        Some(r#"{"status":"ORDER_STATUS_PAID"}"#),
    )
    .await
    .unwrap();
    assert_eq!(paid.status, 200, "{}", paid.body);
    let event = first_stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    assert!(event.data.contains("ORDER_STATUS_PAID"), "{}", event.data);
}

/// Watches are shared only between callers with the very same `Authorization`: a caller with a
/// wrong token gets its own 401 even while another caller watches the same thing, and the
/// other callers keep their events.
#[tokio::test]
async fn callers_with_different_credentials_never_share_a_watch() {
    let (_server, serve) = gateway_with(&[]).await;
    let addr = serve.addr();
    let writer = bearer(WRITER_TOKEN);
    let reader = bearer(READER_TOKEN);
    // A refused caller first: its failure must not stick to the watch of anyone else.
    let refused_first = SseStream::open(addr, "/v1/events", &[("authorization", "Bearer nope")])
        .await
        .unwrap();
    assert_eq!(refused_first.status, 401);
    let mut writer_stream = SseStream::open(addr, "/v1/events", &[("authorization", &writer)])
        .await
        .unwrap();
    assert_eq!(writer_stream.status, 200);
    let refused = http_request(
        addr,
        "GET",
        "/v1/events",
        &[
            ("authorization", "Bearer nope"),
            ("accept", "text/event-stream"),
        ],
        None,
    )
    .await
    .unwrap();
    assert_json_error(&refused, 401, "UNAUTHENTICATED");
    let anonymous = http_request(addr, "GET", "/v1/events", &[], None)
        .await
        .unwrap();
    assert_json_error(&anonymous, 401, "UNAUTHENTICATED");
    let mut reader_stream = SseStream::open(addr, "/v1/events", &[("authorization", &reader)])
        .await
        .unwrap();
    assert_eq!(reader_stream.status, 200);

    let created = order_id(&create(addr, "tokens").await);
    let seen_by_writer = writer_stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    let seen_by_reader = reader_stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    assert_eq!(event_order_id(&seen_by_writer), created);
    assert_eq!(seen_by_reader, seen_by_writer);
}

/// A client resuming from further back than the shared watch keeps (2 events here) reads
/// its own catch-up stream, then joins: every event once, in order. One resuming from within
/// the kept events starts from them.
#[tokio::test]
async fn a_client_resuming_from_far_back_gets_every_event_once() {
    let (_server, serve) = gateway_with(&[("STATUS_CLIENT_SSE_REPLAY_EVENTS", "2")]).await;
    let addr = serve.addr();
    let auth = bearer(WRITER_TOKEN);
    let headers = [("authorization", auth.as_str())];
    let mut live = SseStream::open(addr, "/v1/events", &headers).await.unwrap();
    assert_eq!(live.status, 200);
    let mut seen = Vec::new();
    for i in 0..5 {
        create(addr, &format!("resume-{i}")).await;
        seen.push(live.next_event(EVENT_WAIT).await.unwrap().unwrap());
    }
    let first = seen[0].id.clone().unwrap();
    let mut far_back = SseStream::open(
        addr,
        "/v1/events",
        &[("authorization", &auth), ("last-event-id", &first)],
    )
    .await
    .unwrap();
    let recent = seen[3].id.clone().unwrap();
    let mut recent_resume = SseStream::open(
        addr,
        "/v1/events",
        &[("authorization", &auth), ("last-event-id", &recent)],
    )
    .await
    .unwrap();
    for event in &seen[1..] {
        assert_eq!(
            &far_back.next_event(EVENT_WAIT).await.unwrap().unwrap(),
            event
        );
    }
    assert_eq!(
        &recent_resume.next_event(EVENT_WAIT).await.unwrap().unwrap(),
        &seen[4]
    );
    for i in 0..3 {
        create(addr, &format!("resume-more-{i}")).await;
        let next = live.next_event(EVENT_WAIT).await.unwrap().unwrap();
        assert_eq!(
            far_back.next_event(EVENT_WAIT).await.unwrap().unwrap(),
            next
        );
        assert_eq!(
            recent_resume.next_event(EVENT_WAIT).await.unwrap().unwrap(),
            next
        );
        seen.push(next);
    }
    let sequences: Vec<u64> = seen.iter().map(sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert_eq!(
        sequences.iter().collect::<HashSet<_>>().len(),
        sequences.len()
    );
}

/// A 64 KiB `Authorization` (which made order-service close the connection shared by every
/// caller) and a 20 KiB one (which it answered with HTTP 431, seen as a 500) are refused with
/// 431 and the JSON body; a concurrent event stream keeps its upstream stream (no resume) and
/// gets the next event.
#[tokio::test]
async fn oversized_headers_are_431_and_fail_only_their_caller() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let server = OrderServiceProcess::start().await.unwrap();
    let serve = ServeProcess::start_logging_to(
        StatusClientCli::new(server.url(), None).timeout("5s"),
        std::fs::File::create(&log_path).unwrap(),
    )
    .await
    .unwrap();
    let addr = serve.addr();
    let auth = bearer(WRITER_TOKEN);
    let order = order_id(&create(addr, "headers").await);
    let mut stream = SseStream::open(addr, "/v1/events", &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(stream.status, 200);

    for size in [64 * 1024, 20 * 1024, 15 * 1024] {
        let huge = format!("Bearer {}", "x".repeat(size));
        let response = http_request(
            addr,
            "GET",
            &format!("/v1/orders/{order}"),
            &[("authorization", &huge)],
            None,
        )
        .await
        .unwrap();
        let body = assert_json_error(&response, 431, "RESOURCE_EXHAUSTED");
        assert_eq!(body["reason"], "REQUEST_HEADERS_TOO_LARGE", "{body}");
    }
    let huge_header = "y".repeat(32 * 1024);
    let response = http_request(
        addr,
        "GET",
        &format!("/v1/orders/{order}"),
        &[("authorization", &auth), ("x-padding", &huge_header)],
        None,
    )
    .await
    .unwrap();
    assert_json_error(&response, 431, "RESOURCE_EXHAUSTED");

    let got = http_request(
        addr,
        "GET",
        &format!("/v1/orders/{order}"),
        &[("authorization", &auth)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    let created = order_id(&create(addr, "headers-after").await);
    let event = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    assert_eq!(event_order_id(&event), created);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains("resuming"),
        "the event stream's upstream watch was interrupted:\n{log}"
    );
}

/// Reads until the peer closes; fails if it has not within [`CLOSE_WAIT`].
async fn closed_by_peer(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(CLOSE_WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the gateway kept the connection open")
        .ok();
    received
}

/// Connections that send nothing, half a request head, or nothing after their first request
/// are closed after the header-read timeout.
#[tokio::test]
async fn idle_and_half_sent_connections_are_closed() {
    let (_server, serve) = gateway_with(&[("STATUS_CLIENT_HEADER_READ_TIMEOUT", "1s")]).await;
    let addr = serve.addr();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        .await
        .unwrap();
    let mut kept_alive = TcpStream::connect(addr).await.unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();

    assert!(closed_by_peer(&mut silent).await.is_empty());
    closed_by_peer(&mut half).await;
    let answered = String::from_utf8(closed_by_peer(&mut kept_alive).await).unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

/// A request whose body stalls halfway is closed after the idle timeout (the head arrived, so
/// the header-read timeout no longer applies).
#[tokio::test]
async fn a_stalled_upload_is_closed_after_the_idle_timeout() {
    let (_server, serve) = gateway_with(&[("STATUS_CLIENT_IDLE_TIMEOUT", "1s")]).await;
    let mut stalled = TcpStream::connect(serve.addr()).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /v1/orders HTTP/1.1\r\nHost: gateway\r\nAuthorization: {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"customerId\"",
                bearer(WRITER_TOKEN)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    closed_by_peer(&mut stalled).await;
}

/// With at most 3 connections, a fourth is answered 503 with the JSON body; once one closes,
/// new connections are served again.
#[tokio::test]
async fn the_connection_cap_holds() {
    let (_server, serve) = gateway_with(&[
        ("STATUS_CLIENT_MAX_CONNECTIONS", "3"),
        ("STATUS_CLIENT_HEADER_READ_TIMEOUT", "60s"),
    ])
    .await;
    let addr = serve.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A complete request, so that the connection is known to be accepted and served.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 12];
        stream.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"HTTP/1.1 200");
        held.push(stream);
    }
    let over = http_request(addr, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    let body = assert_json_error(&over, 503, "UNAVAILABLE");
    assert_eq!(body["reason"], "TOO_MANY_CONNECTIONS", "{body}");

    drop(held.pop());
    // The gateway frees the slot once it has seen the close: poll until it has.
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        let response = http_request(addr, "GET", "/healthz", &[], None)
            .await
            .unwrap();
        if response.status == 200 {
            break;
        }
        assert_json_error(&response, 503, "UNAVAILABLE");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection's slot was never freed"
        );
        tokio::task::yield_now().await;
    }
}

/// 413, 405 and a path that is not UTF-8 answer with the JSON error body like every other
/// error.
#[tokio::test]
async fn every_gateway_error_has_the_json_body() {
    let (_server, serve) = gateway_with(&[]).await;
    let addr = serve.addr();
    let auth = bearer(WRITER_TOKEN);
    let big = format!(
        r#"{{"customerId":"{}","currency":"EUR","items":[]}}"#,
        "c".repeat(3 * 1024 * 1024)
    );
    let too_large = http_request(
        addr,
        "POST",
        "/v1/orders",
        &[("authorization", &auth)],
        Some(&big),
    )
    .await
    .unwrap();
    assert_json_error(&too_large, 413, "RESOURCE_EXHAUSTED");

    let wrong_method = http_request(
        addr,
        "DELETE",
        "/v1/orders",
        &[("authorization", &auth)],
        None,
    )
    .await
    .unwrap();
    assert_json_error(&wrong_method, 405, "UNIMPLEMENTED");
    assert!(
        wrong_method.headers.contains_key("allow"),
        "{:?}",
        wrong_method.headers
    );

    for path in ["/v1/orders/%FF", "/v1/orders/%C3%28/events"] {
        let bad_path = http_request(addr, "GET", path, &[("authorization", &auth)], None)
            .await
            .unwrap();
        assert_json_error(&bad_path, 400, "INVALID_ARGUMENT");
    }
}

/// An event stream "from now" starts with an `id:` alone naming where order-service's watch
/// starts (its `orders-watch-from`), so that a browser cut off before the first event
/// reconnects with that `Last-Event-ID` and misses nothing committed in between.
#[tokio::test]
async fn a_stream_from_now_names_its_start_and_a_reconnect_from_it_misses_nothing() {
    let (_server, serve) = gateway_with(&[]).await;
    let addr = serve.addr();
    let auth = bearer(WRITER_TOKEN);
    let headers = [("authorization", auth.as_str())];
    let first_order = order_id(&create(addr, "first-id-0").await);
    let mut one_order =
        SseStream::open(addr, &format!("/v1/orders/{first_order}/events"), &headers)
            .await
            .unwrap();
    let created_sequence = one_order.next_event(EVENT_WAIT).await.unwrap().unwrap().id;

    let mut from_now = SseStream::open(addr, "/v1/events", &headers).await.unwrap();
    assert_eq!(from_now.status, 200);
    let start = from_now.next_last_event_id(EVENT_WAIT).await.unwrap();
    assert_eq!(
        start, created_sequence,
        "the first id is the last committed sequence"
    );
    drop(from_now);

    let missed: Vec<String> = [
        order_id(&create(addr, "first-id-1").await),
        order_id(&create(addr, "first-id-2").await),
    ]
    .into();
    let start = start.unwrap();
    let mut reconnected = SseStream::open(
        addr,
        "/v1/events",
        &[("authorization", &auth), ("last-event-id", &start)],
    )
    .await
    .unwrap();
    for id in missed {
        let event = reconnected.next_event(EVENT_WAIT).await.unwrap().unwrap();
        assert_eq!(event_order_id(&event), id);
    }
}

/// An event stream whose watch cannot open within the request's deadline is 504
/// `DEADLINE_EXCEEDED` with a readable duration; once order-service answers again, streams open.
#[tokio::test]
async fn an_event_stream_that_cannot_open_in_time_is_504() {
    let (server, serve) = gateway_with(&[]).await;
    let addr = serve.addr();
    let auth = bearer(WRITER_TOKEN);
    create(addr, "deadline").await;
    server.pause().await.unwrap();
    let frozen = http_request(
        addr,
        "GET",
        "/v1/events",
        &[
            ("authorization", &auth),
            ("accept", "text/event-stream"),
            ("grpc-timeout", "500m"),
        ],
        None,
    )
    .await
    .unwrap();
    let body = assert_json_error(&frozen, 504, "DEADLINE_EXCEEDED");
    assert!(
        body["message"].as_str().unwrap().contains("500ms"),
        "{body}"
    );
    server.resume().unwrap();
    let mut stream = SseStream::open(addr, "/v1/events", &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(stream.status, 200);
    let created = order_id(&create(addr, "deadline-after").await);
    let event = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    assert_eq!(event_order_id(&event), created);
}

/// One caller's one-order event streams on many different orders are fed from its one
/// all-orders upstream watch, not one upstream watch each: with order-service allowing only 20
/// watchers, 60 streams on 60 orders all open and each gets its order's change.
#[tokio::test]
async fn one_callers_streams_on_many_orders_hold_one_upstream_watch() {
    let server = OrderServiceProcess::start_with_env(&[("ORDER_SERVICE_MAX_WATCHERS", "20")])
        .await
        .unwrap();
    let serve = ServeProcess::start(&server.url(), "5s").await.unwrap();
    let addr = serve.addr();
    let auth = bearer(WRITER_TOKEN);
    let mut streams = Vec::new();
    for i in 0..60 {
        let id = order_id(&create(addr, &format!("watchers-{i}")).await);
        // One at a time: each stream reads its order's current state with a short watch of
        // its own, which must not count against the 20 while the next one opens.
        let mut stream = SseStream::open(
            addr,
            &format!("/v1/orders/{id}/events"),
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
        assert_eq!(stream.status, 200, "stream {i} refused");
        let current = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
        assert_eq!(event_order_id(&current), id);
        streams.push((id, stream));
    }
    for (id, stream) in &mut streams {
        let paid = http_request(
            addr,
            "POST",
            &format!("/v1/orders/{id}/status"),
            &[("authorization", &auth)],
            Some(r#"{"status":"ORDER_STATUS_PAID"}"#),
        )
        .await
        .unwrap();
        assert_eq!(paid.status, 200, "{}", paid.body);
        let event = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
        assert_eq!(&event_order_id(&event), id);
        assert!(event.data.contains("ORDER_STATUS_PAID"), "{}", event.data);
    }
}
