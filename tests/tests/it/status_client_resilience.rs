//! The `Client` library against a real order-service that is stopped, restarted, paused and
//! partly dead: retries within the deadline with exactly one effect, DEADLINE_EXCEEDED from a
//! frozen server, no retry of a final error, the retry throttle, a watch that survives a
//! restart, and two endpoints of which one is dead.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use order_status_tests::lossy_proxy::LossyProxy;
use order_status_tests::order_service_process::{
    OrderServiceProcess, WRITER_TOKEN, unused_local_addr,
};
use order_status_tests::status_client_process::StatusClientCli;
use status_client::proto::{
    CreateOrderRequest, LineItem, ListOrdersRequest, OrderEvent, OrderStatus,
    UpdateOrderStatusRequest, WatchOrdersRequest,
};
use status_client::retry::{RetryPolicy, ThrottleSettings};
use status_client::{CallOptions, Client, OrderEventStream, Settings};
use tonic::Code;

/// Retries fast enough for a test, many enough to outlast a restart.
fn patient_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 50,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        multiplier: 2.0,
    }
}

fn client(
    endpoints: &str,
    timeout: Duration,
    retry: RetryPolicy,
    throttle: ThrottleSettings,
) -> Client {
    let settings = Settings::from_endpoint_list(endpoints)
        .unwrap()
        .with_token(WRITER_TOKEN)
        .with_timeout(timeout)
        .with_retry(retry)
        .with_throttle(throttle);
    Client::new(settings).unwrap()
}

/// A throttle that never stops the retries of a test that wants to see them.
fn roomy_throttle() -> ThrottleSettings {
    ThrottleSettings {
        max_tokens: 1000.0,
        token_ratio: 1.0,
    }
}

fn new_order(customer: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        customer_id: customer.to_owned(),
        currency: "EUR".to_owned(),
        items: vec![LineItem {
            sku: "BOOK".to_owned(),
            quantity: 1,
            unit_price_cents: 500,
        }],
        ..Default::default()
    }
}

async fn orders_of(client: &Client, customer: &str) -> Vec<status_client::proto::Order> {
    let request = ListOrdersRequest {
        customer_id: customer.to_owned(),
        ..Default::default()
    };
    client
        .list_all_orders(request, CallOptions::new())
        .map(Result::unwrap)
        .collect()
        .await
}

/// A URL where nothing listens: a port that was just bound and released.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[tokio::test]
async fn a_create_retried_across_a_server_restart_makes_exactly_one_order() {
    let mut server = OrderServiceProcess::start().await.unwrap();
    let client = client(
        &server.url(),
        Duration::from_secs(20),
        patient_retries(),
        roomy_throttle(),
    );
    client
        .create_order(new_order("warm-up"), CallOptions::new())
        .await
        .unwrap();
    let mut stats = client.stats();
    let before = *stats.borrow();

    server.stop().await.unwrap();
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .create_order(new_order("restart"), CallOptions::new())
                .await
        }
    });
    // Restart only once the call has failed at least once against the stopped server.
    stats
        .wait_for(|s| s.attempts >= before.attempts + 2)
        .await
        .unwrap();
    server.restart().await.unwrap();

    let order = call.await.unwrap().expect("the retried create succeeds");
    assert_eq!(order.status(), OrderStatus::Pending);
    assert!(client.stats().borrow().retries > before.retries);
    let made = orders_of(&client, "restart").await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].order_id, order.order_id);
}

#[tokio::test]
async fn a_create_whose_response_is_lost_is_retried_into_the_same_order() {
    let server = OrderServiceProcess::start().await.unwrap();
    let proxy = LossyProxy::start(server.addr()).await.unwrap();
    let client = client(
        &proxy.url(),
        Duration::from_secs(20),
        patient_retries(),
        roomy_throttle(),
    );
    client
        .create_order(new_order("warm-up"), CallOptions::new())
        .await
        .unwrap();
    // Sees what the server did, bypassing the proxy.
    let observer = client_direct(&server.url());
    let mut server_events = observer
        .open_watch(WatchOrdersRequest::default(), CallOptions::new())
        .await
        .unwrap();

    proxy.hold_responses();
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .create_order(new_order("lost-response"), CallOptions::new())
                .await
        }
    });
    // The server made the order; its answer is held by the proxy. Now it is lost.
    let made = next(&mut server_events).await.order.unwrap();
    assert_eq!(made.customer_id, "lost-response");
    proxy.cut();

    let order = call
        .await
        .unwrap()
        .expect("the retry gets the first call's order");
    assert_eq!(order.order_id, made.order_id);
    assert!(client.stats().borrow().retries >= 1);
    assert_eq!(orders_of(&observer, "lost-response").await.len(), 1);
}

fn client_direct(url: &str) -> Client {
    client(
        url,
        Duration::from_secs(10),
        patient_retries(),
        roomy_throttle(),
    )
}

#[tokio::test]
async fn a_retry_with_the_same_key_never_makes_a_second_order() {
    let server = OrderServiceProcess::start().await.unwrap();
    let client = client(
        &server.url(),
        Duration::from_secs(5),
        patient_retries(),
        roomy_throttle(),
    );
    // What a retry after a lost response looks like to the server: the same key again.
    let options = CallOptions::new().request_id("lost-response-key");
    let first = client
        .create_order(new_order("lost"), options.clone())
        .await
        .unwrap();
    let again = client
        .create_order(new_order("lost"), options)
        .await
        .unwrap();
    assert_eq!(first.order_id, again.order_id);
    assert_eq!(orders_of(&client, "lost").await.len(), 1);
}

#[tokio::test]
async fn a_frozen_server_ends_the_call_with_deadline_exceeded_at_the_deadline() {
    let server = OrderServiceProcess::start().await.unwrap();
    let deadline = Duration::from_millis(1500);
    let client = client(&server.url(), deadline, patient_retries(), roomy_throttle());
    let order = client
        .create_order(new_order("frozen"), CallOptions::new())
        .await
        .unwrap();

    server.pause().await.unwrap();
    let started = Instant::now();
    let result = client.get_order(&order.order_id, CallOptions::new()).await;
    let elapsed = started.elapsed();
    server.resume().unwrap();

    let error = match result {
        Err(error) => error,
        Ok(order) => panic!("a frozen server answered after {elapsed:?}: {order:?}"),
    };
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(elapsed >= deadline, "gave up early: {elapsed:?}");
    assert!(
        elapsed < deadline + Duration::from_secs(1),
        "overran the deadline: {elapsed:?}"
    );
    // Resumed, it answers again.
    client
        .get_order(&order.order_id, CallOptions::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let server = OrderServiceProcess::start().await.unwrap();
    let client = client(
        &server.url(),
        Duration::from_secs(5),
        patient_retries(),
        roomy_throttle(),
    );
    let mut request = new_order("invalid");
    request.items[0].quantity = 0;
    let error = client
        .create_order(request, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error
            .field_violations()
            .iter()
            .any(|v| v.field == "items[0].quantity"),
        "{:?}",
        error.field_violations()
    );
    let stats = *client.stats().borrow();
    assert_eq!((stats.attempts, stats.retries), (1, 0));

    let error = client
        .get_order("no-such-order", CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(
        client.stats().borrow().attempts,
        2,
        "NOT_FOUND is not retried either"
    );
}

#[tokio::test]
async fn the_retry_throttle_caps_attempts_against_a_server_that_hangs_up() {
    let policy = RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        multiplier: 2.0,
    };
    // Every connection is accepted, then closed: each attempt reached a server (as far as the
    // client can tell) and failed, which is what the throttle rations. A server that cannot
    // be reached at all spends no tokens (see the outage tests below).
    let hangs_up = LossyProxy::start(unused_local_addr().unwrap())
        .await
        .unwrap();
    // gRFC A6 defaults: 10 tokens, each failure takes one, retries only above 5.
    let client = client(
        &hangs_up.url(),
        Duration::from_secs(5),
        policy,
        ThrottleSettings::default(),
    );
    for _ in 0..10 {
        let error = client
            .get_order("any", CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unavailable, "{error}");
        assert!(!error.never_reached_a_server(), "{error}");
    }
    let stats = *client.stats().borrow();
    // Without the throttle: 10 calls x 5 attempts = 50. With it: the first call spends five
    // tokens on five attempts, each later call gets its first attempt only.
    assert_eq!(stats.attempts, 14, "{stats:?}");
    assert_eq!(stats.throttled, 9, "{stats:?}");
}

#[tokio::test]
async fn a_watch_continues_across_server_restarts_delivering_every_event_once() {
    let mut server = OrderServiceProcess::start().await.unwrap();
    let client = client(
        &server.url(),
        Duration::from_secs(10),
        patient_retries(),
        roomy_throttle(),
    );
    let first = client
        .create_order(new_order("watch"), CallOptions::new())
        .await
        .unwrap();
    let mut events = client
        .open_watch(
            WatchOrdersRequest {
                order_id: String::new(),
                after_sequence: 0,
            },
            CallOptions::new(),
        )
        .await
        .unwrap();
    // A watch of all orders from sequence 0 is live only: the create before it is not replayed,
    // the change after it is delivered.
    let paid = update(&client, &first.order_id, OrderStatus::Paid).await;
    let mut expected = vec![(paid.order_id.clone(), paid.version)];
    let mut seen = vec![next(&mut events).await];

    // Graceful stop and restart; events made right after the restart, before the watch is back,
    // come from the stored log.
    server.stop().await.unwrap();
    server.restart().await.unwrap();
    for customer in ["watch-a", "watch-b"] {
        let order = client
            .create_order(new_order(customer), CallOptions::new())
            .await
            .unwrap();
        expected.push((order.order_id, order.version));
    }
    let shipped = update(&client, &first.order_id, OrderStatus::Shipped).await;
    expected.push((shipped.order_id.clone(), shipped.version));
    for _ in 0..3 {
        seen.push(next(&mut events).await);
    }

    // Killed without a goodbye, then restarted.
    server.kill().await.unwrap();
    server.restart().await.unwrap();
    let delivered = update(&client, &first.order_id, OrderStatus::Delivered).await;
    expected.push((delivered.order_id.clone(), delivered.version));
    seen.push(next(&mut events).await);

    let keys: Vec<(String, i64)> = seen.iter().map(key).collect();
    assert_eq!(keys, expected);
    let sequences: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert!(client.stats().borrow().watch_resumptions >= 2);
}

#[tokio::test]
async fn two_endpoints_with_one_dead_serve_every_call() {
    let server = OrderServiceProcess::start().await.unwrap();
    let endpoints = format!("{},{}", dead_url(), server.url());
    let client = client(
        &endpoints,
        Duration::from_secs(5),
        RetryPolicy::default(),
        ThrottleSettings::default(),
    );
    let mut ids = HashSet::new();
    for _ in 0..10 {
        let order = client
            .create_order(new_order("two-endpoints"), CallOptions::new())
            .await
            .unwrap();
        ids.insert(order.order_id.clone());
        client
            .get_order(&order.order_id, CallOptions::new())
            .await
            .unwrap();
    }
    assert_eq!(ids.len(), 10);
    assert_eq!(orders_of(&client, "two-endpoints").await.len(), 10);
    let stats = *client.stats().borrow();
    // The dead replica costs one failed attempt, then it is passed over.
    assert!(stats.retries <= 2, "{stats:?}");

    // A watch also finds the live replica.
    let order = client
        .create_order(new_order("two-endpoints"), CallOptions::new())
        .await
        .unwrap();
    let mut events = client.watch_orders(
        WatchOrdersRequest {
            order_id: order.order_id.clone(),
            after_sequence: 0,
        },
        CallOptions::new(),
    );
    assert_eq!(
        next(&mut events).await.order.unwrap().order_id,
        order.order_id
    );
}

async fn update(
    client: &Client,
    order_id: &str,
    status: OrderStatus,
) -> status_client::proto::Order {
    let request = UpdateOrderStatusRequest {
        order_id: order_id.to_owned(),
        status: status as i32,
        ..Default::default()
    };
    client
        .update_order_status(request, CallOptions::new())
        .await
        .unwrap()
}

async fn next(events: &mut OrderEventStream) -> OrderEvent {
    tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("an event in time")
        .expect("the watch goes on")
        .expect("no final error")
}

fn key(event: &OrderEvent) -> (String, i64) {
    let order = event.order.as_ref().unwrap();
    (order.order_id.clone(), order.version)
}

/// The CLI against `url` with the writer's token and `timeout`.
fn cli(url: &str, timeout: &str) -> StatusClientCli {
    StatusClientCli::new(url, Some(WRITER_TOKEN)).timeout(timeout)
}

#[tokio::test]
async fn a_cli_watch_cut_before_its_first_event_gets_the_events_made_during_the_cut() {
    let server = OrderServiceProcess::start().await.unwrap();
    let proxy = LossyProxy::start(server.addr()).await.unwrap();
    let direct = client_direct(&server.url());
    direct
        .create_order(new_order("before-the-watch"), CallOptions::new())
        .await
        .unwrap();
    // A live watch (no --after) through the proxy; it is open once it says so.
    let mut watch = cli(&proxy.url(), "5s")
        .spawn_logging(&["watch", "--output", "json"])
        .unwrap();
    watch.logged("watching").await.unwrap();

    // The connection goes silent, three orders are made, then it is cut: the watch has seen
    // no event at all, and must ask for what came after the point it opened at.
    proxy.hold_responses();
    let mut made = Vec::new();
    for _ in 0..3 {
        let order = direct
            .create_order(new_order("during-the-cut"), CallOptions::new())
            .await
            .unwrap();
        made.push(order.order_id);
    }
    proxy.cut();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(20), watch.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} of {made:?} arrived after the cut"))
            .unwrap()
            .expect("the watch goes on");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(event["order"]["orderId"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, made);
}

#[tokio::test]
async fn a_cli_create_started_during_an_outage_longer_than_five_attempts_succeeds_once() {
    // Longer than the old five attempts could ever wait in total (0.2 + 0.4 + 0.8 + 1.6 s).
    const OUTAGE: Duration = Duration::from_secs(4);
    let mut server = OrderServiceProcess::start().await.unwrap();
    server.stop().await.unwrap();
    let stopped = tokio::time::Instant::now();
    let mut create = cli(&server.url(), "15s")
        .env("RUST_LOG", "warn,status_client=debug")
        .spawn_logging(&[
            "create",
            "--customer",
            "outage",
            "--currency",
            "EUR",
            "--item",
            "BOOK:1:500",
            "--output",
            "json",
        ])
        .unwrap();
    // The default policy allows five attempts: the outage lasts until a sixth has been
    // scheduled, and at least OUTAGE (the length of the outage is what this test is about,
    // so it is waited out rather than awaited).
    for _ in 0..5 {
        create.logged("retrying").await.unwrap();
    }
    tokio::time::sleep_until(stopped + OUTAGE).await;
    server.restart().await.unwrap();

    let status = tokio::time::timeout(Duration::from_secs(20), create.child.wait())
        .await
        .expect("the create ends within its deadline")
        .unwrap();
    let printed = create.stdout.next_line().await.unwrap().unwrap_or_default();
    assert!(status.success(), "{status}: {printed}");
    let order: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let made = orders_of(&client_direct(&server.url()), "outage").await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(order["orderId"], made[0].order_id.as_str());
}

#[tokio::test]
async fn with_no_server_ever_a_call_ends_at_its_deadline_with_deadline_exceeded() {
    // DEADLINE_EXCEEDED, not UNAVAILABLE: no server was reached, so the call waited for one
    // until its deadline as gRPC's wait-for-ready does, and the deadline is what ended it;
    // the message carries the last connection error.
    let deadline = Duration::from_secs(2);
    let started = Instant::now();
    let output = cli(&dead_url(), "2s").run(&["get", "any"]).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(output.status, Some(14), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("DEADLINE_EXCEEDED: deadline of 2s exceeded"),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains("refused"), "{}", output.stderr);
    assert!(
        elapsed >= deadline,
        "gave up before the deadline: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_watch_that_cannot_open_in_time_is_deadline_exceeded_with_a_readable_duration() {
    let server = OrderServiceProcess::start().await.unwrap();
    server.pause().await.unwrap();
    let output = cli(&server.url(), "1s").run(&["watch"]).await.unwrap();
    server.resume().unwrap();
    assert_eq!(output.status, Some(14), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("DEADLINE_EXCEEDED: deadline of 1s exceeded"),
        "{}",
        output.stderr
    );
    assert!(
        !output.stderr.contains("us ") && !output.stderr.contains("ns"),
        "{}",
        output.stderr
    );
}
