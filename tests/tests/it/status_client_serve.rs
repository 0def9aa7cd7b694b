//! `status-client serve` in front of a real order-service: every HTTP route with its errors,
//! the caller's `Authorization` passed through, deadlines, probes, Server-Sent Events resumed
//! with `Last-Event-ID`, and graceful shutdown.

use std::time::Duration;

use order_status_tests::order_service_process::{OrderServiceProcess, READER_TOKEN, WRITER_TOKEN};
use order_status_tests::status_client_process::{
    HttpResponse, ServeProcess, SseStream, http_request,
};
use serde_json::{Value, json};

const EVENT_WAIT: Duration = Duration::from_secs(10);

struct Gateway {
    server: OrderServiceProcess,
    serve: ServeProcess,
}

async fn gateway(timeout: &str) -> Gateway {
    let server = OrderServiceProcess::start().await.unwrap();
    let serve = ServeProcess::start(&server.url(), timeout).await.unwrap();
    Gateway { server, serve }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

impl Gateway {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<Value>,
    ) -> HttpResponse {
        let auth = token.map(bearer);
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        let body = body.map(|b| b.to_string());
        http_request(self.serve.addr(), method, path, &headers, body.as_deref())
            .await
            .unwrap()
    }

    async fn create(&self, customer: &str) -> Value {
        let response = self
            .call(
                "POST",
                "/v1/orders",
                Some(WRITER_TOKEN),
                &[],
                Some(order_body(customer)),
            )
            .await;
        assert_eq!(response.status, 201, "{}", response.body);
        response.json().unwrap()
    }
}

fn order_body(customer: &str) -> Value {
    json!({
        "customerId": customer,
        "currency": "EUR",
        "items": [{"sku": "BOOK", "quantity": 2, "unitPriceCents": "1250"}]
    })
}

fn assert_error(response: &HttpResponse, status: u16, code: &str, reason: Option<&str>) -> Value {
    assert_eq!(response.status, status, "{}", response.body);
    let body = response.json().unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    if let Some(reason) = reason {
        assert_eq!(body["reason"], reason, "{body}");
    }
    body
}

#[tokio::test]
async fn orders_are_created_read_listed_and_updated_as_json() {
    let gw = gateway("5s").await;

    let created = gw
        .call(
            "POST",
            "/v1/orders",
            Some(WRITER_TOKEN),
            &[],
            Some(order_body("http-1")),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let order = created.json().unwrap();
    let id = order["orderId"].as_str().unwrap().to_owned();
    assert_eq!(
        created.headers["location"],
        format!("/v1/orders/{id}").as_str()
    );
    assert_eq!(order["status"], "ORDER_STATUS_PENDING");
    assert_eq!(order["totalCents"], "2500");
    assert_eq!(order["version"], "1");

    let got = gw
        .call(
            "GET",
            &format!("/v1/orders/{id}"),
            Some(WRITER_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json().unwrap(), order);
    assert!(
        got.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );

    let paid = gw
        .call(
            "POST",
            &format!("/v1/orders/{id}/status"),
            Some(WRITER_TOKEN),
            &[],
            Some(json!({"status": "ORDER_STATUS_PAID", "expectedVersion": "1", "reason": "card"})),
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    let paid = paid.json().unwrap();
    assert_eq!(paid["status"], "ORDER_STATUS_PAID");
    assert_eq!(paid["version"], "2");

    gw.create("http-1").await;
    gw.create("http-1").await;
    // Paging by hand with pageSize and pageToken.
    let mut token = String::new();
    let mut listed = Vec::new();
    loop {
        let path = format!("/v1/orders?customerId=http-1&pageSize=2&pageToken={token}");
        let page = gw.call("GET", &path, Some(READER_TOKEN), &[], None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json().unwrap();
        listed.extend(page["orders"].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => break,
        }
    }
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["orderId"], id.as_str());
    let paid_only = gw
        .call(
            "GET",
            "/v1/orders?customerId=http-1&status=ORDER_STATUS_PAID",
            Some(READER_TOKEN),
            &[],
            None,
        )
        .await
        .json()
        .unwrap();
    assert_eq!(paid_only["orders"].as_array().unwrap().len(), 1);
    let also_paid = gw
        .call(
            "GET",
            "/v1/orders?customerId=http-1&status=paid",
            Some(READER_TOKEN),
            &[],
            None,
        )
        .await
        .json()
        .unwrap();
    assert_eq!(also_paid, paid_only);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_post_create_one_order() {
    let gw = gateway("5s").await;
    let key = [("idempotency-key", "http-key-1")];
    let first = gw
        .call(
            "POST",
            "/v1/orders",
            Some(WRITER_TOKEN),
            &key,
            Some(order_body("idem")),
        )
        .await;
    let second = gw
        .call(
            "POST",
            "/v1/orders",
            Some(WRITER_TOKEN),
            &key,
            Some(order_body("idem")),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(second.status, 201, "{}", second.body);
    assert_eq!(
        first.json().unwrap()["orderId"],
        second.json().unwrap()["orderId"]
    );
    let listed = gw
        .call(
            "GET",
            "/v1/orders?customerId=idem",
            Some(WRITER_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(
        listed.json().unwrap()["orders"].as_array().unwrap().len(),
        1
    );

    let reused = gw
        .call(
            "POST",
            "/v1/orders",
            Some(WRITER_TOKEN),
            &key,
            Some(order_body("other")),
        )
        .await;
    assert_error(
        &reused,
        400,
        "INVALID_ARGUMENT",
        Some("IDEMPOTENCY_KEY_REUSED"),
    );

    let mut body = order_body("idem");
    body["requestId"] = json!("a-different-key");
    let mismatch = gw
        .call("POST", "/v1/orders", Some(WRITER_TOKEN), &key, Some(body))
        .await;
    assert_error(
        &mismatch,
        400,
        "INVALID_ARGUMENT",
        Some("IDEMPOTENCY_KEY_MISMATCH"),
    );
}

#[tokio::test]
async fn errors_map_to_http_statuses_with_a_json_body() {
    let gw = gateway("5s").await;
    let order = gw.create("errors").await;
    let id = order["orderId"].as_str().unwrap();
    let status_path = format!("/v1/orders/{id}/status");

    let missing = gw
        .call(
            "GET",
            "/v1/orders/no-such-order",
            Some(WRITER_TOKEN),
            &[],
            None,
        )
        .await;
    assert_error(&missing, 404, "NOT_FOUND", None);

    let invalid = gw
        .call(
            "POST",
            "/v1/orders",
            Some(WRITER_TOKEN),
            &[],
            Some(json!({"customerId": "c", "currency": "euro", "items": [{"sku": "A", "quantity": 0}]})),
        )
        .await;
    let body = assert_error(&invalid, 400, "INVALID_ARGUMENT", None);
    let fields: Vec<&str> = body["fieldViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"items[0].quantity"), "{body}");

    let not_json = http_request(
        gw.serve.addr(),
        "POST",
        "/v1/orders",
        &[("authorization", &bearer(WRITER_TOKEN))],
        Some("{not json"),
    )
    .await
    .unwrap();
    assert_error(&not_json, 400, "INVALID_ARGUMENT", Some("INVALID_JSON"));

    let transition = gw
        .call(
            "POST",
            &status_path,
            Some(WRITER_TOKEN),
            &[],
            Some(json!({"status": "ORDER_STATUS_DELIVERED"})),
        )
        .await;
    assert_error(
        &transition,
        400,
        "FAILED_PRECONDITION",
        Some("INVALID_TRANSITION"),
    );

    let stale = gw
        .call(
            "POST",
            &status_path,
            Some(WRITER_TOKEN),
            &[],
            Some(json!({"status": "ORDER_STATUS_PAID", "expectedVersion": "9"})),
        )
        .await;
    assert_error(&stale, 409, "ABORTED", Some("VERSION_MISMATCH"));

    let empty_filters = gw
        .call(
            "GET",
            "/v1/orders?status=&customerId=&pageSize=&pageToken=",
            Some(WRITER_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(empty_filters.status, 200, "{}", empty_filters.body);
    let bad_size = gw
        .call(
            "GET",
            "/v1/orders?pageSize=many",
            Some(WRITER_TOKEN),
            &[],
            None,
        )
        .await;
    assert_error(&bad_size, 400, "INVALID_ARGUMENT", Some("INVALID_QUERY"));
    let bad_status = gw
        .call(
            "GET",
            "/v1/orders?status=lost",
            Some(WRITER_TOKEN),
            &[],
            None,
        )
        .await;
    assert_error(&bad_status, 400, "INVALID_ARGUMENT", Some("INVALID_QUERY"));
    let bad_token = gw
        .call(
            "GET",
            "/v1/orders?pageToken=garbage",
            Some(WRITER_TOKEN),
            &[],
            None,
        )
        .await;
    assert_error(&bad_token, 400, "INVALID_ARGUMENT", None);
    let bad_timeout = gw
        .call(
            "GET",
            "/v1/orders",
            Some(WRITER_TOKEN),
            &[("grpc-timeout", "soon")],
            None,
        )
        .await;
    assert_error(
        &bad_timeout,
        400,
        "INVALID_ARGUMENT",
        Some("INVALID_TIMEOUT"),
    );
    let no_route = gw
        .call("GET", "/v2/things", Some(WRITER_TOKEN), &[], None)
        .await;
    assert_error(&no_route, 404, "NOT_FOUND", Some("NO_ROUTE"));
}

#[tokio::test]
async fn the_callers_authorization_is_passed_through_and_nothing_more() {
    let gw = gateway("5s").await;
    let order = gw.create("auth").await;
    let path = format!("/v1/orders/{}", order["orderId"].as_str().unwrap());

    let anonymous = gw.call("GET", &path, None, &[], None).await;
    assert_error(&anonymous, 401, "UNAUTHENTICATED", None);
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");

    let wrong = gw.call("GET", &path, Some("not-a-token"), &[], None).await;
    assert_error(&wrong, 401, "UNAUTHENTICATED", None);

    let reader_get = gw.call("GET", &path, Some(READER_TOKEN), &[], None).await;
    assert_eq!(reader_get.status, 200, "{}", reader_get.body);

    let reader_post = gw
        .call(
            "POST",
            "/v1/orders",
            Some(READER_TOKEN),
            &[],
            Some(order_body("auth")),
        )
        .await;
    assert_error(&reader_post, 403, "PERMISSION_DENIED", None);
    let reader_update = gw
        .call(
            "POST",
            &format!("{path}/status"),
            Some(READER_TOKEN),
            &[],
            Some(json!({"status": "ORDER_STATUS_PAID"})),
        )
        .await;
    assert_error(&reader_update, 403, "PERMISSION_DENIED", None);

    let reader_events = SseStream::open(gw.serve.addr(), "/v1/events", &[])
        .await
        .unwrap();
    assert_eq!(reader_events.status, 401);
}

#[tokio::test]
async fn deadlines_become_504_and_probes_follow_order_service() {
    let mut gw = gateway("2s").await;
    let healthz = gw.call("GET", "/healthz", None, &[], None).await;
    assert_eq!(healthz.status, 200);
    let ready = gw.call("GET", "/readyz", None, &[], None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    let order = gw.create("deadline").await;
    let path = format!("/v1/orders/{}", order["orderId"].as_str().unwrap());
    gw.server.pause().await.unwrap();
    // An incoming grpc-timeout shortens the service's own 2 s.
    let started = std::time::Instant::now();
    let frozen = gw
        .call(
            "GET",
            &path,
            Some(WRITER_TOKEN),
            &[("grpc-timeout", "300m")],
            None,
        )
        .await;
    let elapsed = started.elapsed();
    assert_error(&frozen, 504, "DEADLINE_EXCEEDED", None);
    assert!(
        elapsed < Duration::from_millis(1500),
        "the header did not shorten the deadline: {elapsed:?}"
    );
    let frozen = gw.call("GET", &path, Some(WRITER_TOKEN), &[], None).await;
    assert_error(&frozen, 504, "DEADLINE_EXCEEDED", None);
    gw.server.resume().unwrap();
    let back = gw.call("GET", &path, Some(WRITER_TOKEN), &[], None).await;
    assert_eq!(back.status, 200, "{}", back.body);

    gw.server.stop().await.unwrap();
    let not_ready = gw.call("GET", "/readyz", None, &[], None).await;
    assert_error(
        &not_ready,
        503,
        "UNAVAILABLE",
        Some("ORDER_SERVICE_NOT_READY"),
    );
    let down = gw.call("GET", &path, Some(WRITER_TOKEN), &[], None).await;
    assert!([503, 504].contains(&down.status), "{}", down.body);
    let healthz = gw.call("GET", "/healthz", None, &[], None).await;
    assert_eq!(healthz.status, 200, "alive even when order-service is not");
}

#[tokio::test]
async fn order_events_stream_as_sse_and_resume_with_last_event_id() {
    let gw = gateway("5s").await;
    let order = gw.create("sse").await;
    let id = order["orderId"].as_str().unwrap().to_owned();
    let events_path = format!("/v1/orders/{id}/events");
    let auth = bearer(WRITER_TOKEN);
    let headers = [("authorization", auth.as_str())];

    let mut stream = SseStream::open(gw.serve.addr(), &events_path, &headers)
        .await
        .unwrap();
    assert_eq!(stream.status, 200);
    let current = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    assert_eq!(current.event, "order");
    let current_data: Value = serde_json::from_str(&current.data).unwrap();
    assert_eq!(current_data["order"]["status"], "ORDER_STATUS_PENDING");
    assert_eq!(current.id.as_deref(), current_data["sequence"].as_str());

    for status in ["ORDER_STATUS_PAID", "ORDER_STATUS_SHIPPED"] {
        let response = gw
            .call(
                "POST",
                &format!("/v1/orders/{id}/status"),
                Some(WRITER_TOKEN),
                &[],
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let paid = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    let shipped = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    assert!(paid.data.contains("ORDER_STATUS_PAID"), "{}", paid.data);
    assert!(
        shipped.data.contains("ORDER_STATUS_SHIPPED"),
        "{}",
        shipped.data
    );
    drop(stream);

    // What a reconnecting EventSource does: Last-Event-ID = the last id it saw.
    let last_seen = current.id.clone().unwrap();
    let resume = [
        ("authorization", auth.as_str()),
        ("last-event-id", last_seen.as_str()),
    ];
    let mut resumed = SseStream::open(gw.serve.addr(), &events_path, &resume)
        .await
        .unwrap();
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.next_event(EVENT_WAIT).await.unwrap().unwrap(), paid);
    assert_eq!(
        resumed.next_event(EVENT_WAIT).await.unwrap().unwrap(),
        shipped
    );

    // All orders' events, resumed from the same point, include a new order's creation.
    let mut all = SseStream::open(gw.serve.addr(), "/v1/events", &resume)
        .await
        .unwrap();
    assert_eq!(all.next_event(EVENT_WAIT).await.unwrap().unwrap(), paid);
    assert_eq!(all.next_event(EVENT_WAIT).await.unwrap().unwrap(), shipped);
    let other = gw.create("sse-other").await;
    let created = all.next_event(EVENT_WAIT).await.unwrap().unwrap();
    let created: Value = serde_json::from_str(&created.data).unwrap();
    assert_eq!(created["order"]["orderId"], other["orderId"]);

    let unknown = SseStream::open(gw.serve.addr(), "/v1/orders/no-such-order/events", &headers)
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    let bad_resume = SseStream::open(
        gw.serve.addr(),
        &events_path,
        &[
            ("authorization", auth.as_str()),
            ("last-event-id", "yesterday"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(bad_resume.status, 400);

    // SIGTERM ends open streams and the service exits cleanly.
    let Gateway {
        serve,
        server: _server,
    } = gw;
    let status = serve.terminate().await.unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        all.next_event(EVENT_WAIT).await.unwrap(),
        None,
        "the stream ends on shutdown"
    );
}

#[tokio::test]
async fn an_sse_stream_survives_an_order_service_restart() {
    let mut gw = gateway("5s").await;
    let order = gw.create("sse-restart").await;
    let id = order["orderId"].as_str().unwrap().to_owned();
    let auth = bearer(WRITER_TOKEN);
    let mut stream = SseStream::open(
        gw.serve.addr(),
        &format!("/v1/orders/{id}/events"),
        &[("authorization", auth.as_str())],
    )
    .await
    .unwrap();
    let current = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();

    gw.server.stop().await.unwrap();
    gw.server.restart().await.unwrap();
    let paid = gw
        .call(
            "POST",
            &format!("/v1/orders/{id}/status"),
            Some(WRITER_TOKEN),
            &[],
            Some(json!({"status": "ORDER_STATUS_PAID"})),
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.body);

    let next = stream.next_event(EVENT_WAIT).await.unwrap().unwrap();
    assert_eq!(next.event, "order");
    assert!(next.data.contains("ORDER_STATUS_PAID"), "{}", next.data);
    let (before, after): (u64, u64) = (
        current.id.unwrap().parse().unwrap(),
        next.id.unwrap().parse().unwrap(),
    );
    assert!(after > before);
}
