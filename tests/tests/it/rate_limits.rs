//! order-service's per-principal rate limits as its callers meet them, real processes on both
//! sides: the `Client` waits out a refusal whose `RetryInfo` delay fits in its deadline and
//! fails at once when it does not, and `status-client serve` answers the latter with 429 and
//! `Retry-After`.

use std::time::{Duration, Instant};

use order_status_tests::order_service_process::{
    OrderServiceProcess, PACED_TOKEN, RATE_LIMITED_TOKEN, WRITER_TOKEN,
};
use order_status_tests::status_client_process::{ServeProcess, http_request};
use orders_proto::reason;
use status_client::proto::{CreateOrderRequest, LineItem};
use status_client::{CallOptions, Client, Settings};
use tonic::Code;

fn client(server: &OrderServiceProcess, token: &str, timeout: Duration) -> Client {
    let settings = Settings::from_endpoint_list(&server.url())
        .unwrap()
        .with_token(token)
        .with_timeout(timeout);
    Client::new(settings).unwrap()
}

async fn an_order(server: &OrderServiceProcess) -> String {
    client(server, WRITER_TOKEN, Duration::from_secs(5))
        .create_order(
            CreateOrderRequest {
                customer_id: "rate-limits".into(),
                currency: "EUR".into(),
                items: vec![LineItem {
                    sku: "BOOK".into(),
                    quantity: 1,
                    unit_price_cents: 1250,
                }],
                ..Default::default()
            },
            CallOptions::new(),
        )
        .await
        .unwrap()
        .order_id
}

#[tokio::test]
async fn the_client_waits_out_a_rate_limit_that_fits_its_deadline() {
    let server = OrderServiceProcess::start().await.unwrap();
    let order_id = an_order(&server).await;
    // One call per second, no burst: back to back, every call after the first is refused
    // once and allowed after the RetryInfo delay (at most 1 s, well within 5 s).
    let paced = client(&server, PACED_TOKEN, Duration::from_secs(5));
    for _ in 0..3 {
        let order = paced
            .get_order(&order_id, CallOptions::new())
            .await
            .unwrap();
        assert_eq!(order.order_id, order_id);
    }
    let stats = *paced.stats().borrow();
    assert!(
        stats.retries >= 1,
        "three calls in a row at one per second: some waited: {stats:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_deadline_fails_the_call_at_once() {
    let server = OrderServiceProcess::start().await.unwrap();
    let order_id = an_order(&server).await;
    let timeout = Duration::from_secs(20);
    let limited = client(&server, RATE_LIMITED_TOKEN, timeout);
    limited
        .get_order(&order_id, CallOptions::new())
        .await
        .unwrap();
    let started = Instant::now();
    let error = limited
        .get_order(&order_id, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error}");
    assert_eq!(error.reason(), Some(reason::RATE_LIMITED));
    let delay = error.retry_delay().expect("a RetryInfo delay");
    assert!(
        delay > timeout && delay <= Duration::from_secs(100),
        "{delay:?}"
    );
    assert!(started.elapsed() < timeout, "no waiting for the deadline");
    assert_eq!(limited.stats().borrow().attempts, 2, "no retry");
}

#[tokio::test]
async fn the_gateway_answers_a_rate_limited_caller_with_429_and_retry_after() {
    let server = OrderServiceProcess::start().await.unwrap();
    let serve = ServeProcess::start(&server.url(), "2s").await.unwrap();
    let get = |token: &'static str| {
        let authorization = format!("Bearer {token}");
        let addr = serve.addr();
        async move {
            http_request(
                addr,
                "GET",
                "/v1/orders/ord_missing",
                &[("authorization", &authorization)],
                None,
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(get(RATE_LIMITED_TOKEN).await.status, 404);
    let refused = get(RATE_LIMITED_TOKEN).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry_after: u64 = refused
        .headers
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=100).contains(&retry_after), "{retry_after}");
    let body = refused.json().unwrap();
    assert_eq!(body["code"], "RESOURCE_EXHAUSTED", "{body}");
    assert_eq!(body["reason"], "RATE_LIMITED", "{body}");

    // A wait that fits in the gateway's deadline is waited out: the caller never sees it.
    for _ in 0..2 {
        assert_eq!(get(PACED_TOKEN).await.status, 404);
    }
}
