//! The client's answer to order-service's per-principal rate limit (RESOURCE_EXHAUSTED, reason
//! `RATE_LIMITED`, with a `RetryInfo` delay), against a scripted server on a real socket: wait
//! the delay and try again with the same idempotency key when that fits in the call's deadline,
//! fail at once when it does not; the same for opening and re-opening a watch.
//!
//! The waits are real but short (a few hundred milliseconds): the server is a separate task on a
//! real socket, where paused time would fire the client's deadline timers while it waits for
//! bytes.

use crate::support::{Scripted, start};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use orders_proto::reason;
use orders_proto::v1::{CreateOrderRequest, Order, OrderEvent, WatchOrdersRequest};
use status_client::retry::{RetryPolicy, ThrottleSettings};
use status_client::{CallOptions, Client, Settings};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A client whose retry throttle allows no retry after a single counted failure (2 tokens:
/// one failure leaves 1, which is not more than half), so a retry after a rate-limit refusal
/// shows that such refusals take no tokens.
fn client(addr: SocketAddr, timeout: Duration) -> Client {
    let settings = Settings::from_endpoint_list(&format!("http://{addr}"))
        .unwrap()
        .with_token("t")
        .with_timeout(timeout)
        .with_retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            multiplier: 2.0,
        })
        .with_throttle(ThrottleSettings {
            max_tokens: 2.0,
            token_ratio: 0.1,
        });
    Client::new(settings).unwrap()
}

/// order-service's refusal of a principal over its limit, to retry after `delay`.
fn rate_limited(delay: Duration) -> Status {
    let mut details = ErrorDetails::with_error_info(reason::RATE_LIMITED, reason::DOMAIN, []);
    details
        .set_retry_info(Some(delay))
        .add_quota_failure_violation("scripted", "rate limit of 1 requests per second");
    Status::with_error_details(Code::ResourceExhausted, "over the rate limit", details)
}

fn order(id: &str) -> Order {
    Order {
        order_id: id.to_owned(),
        ..Default::default()
    }
}

fn event(sequence: u64) -> OrderEvent {
    OrderEvent {
        sequence,
        order: Some(order("o")),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_rate_limited_call_waits_the_delay_and_is_sent_again_with_the_same_key() {
    let script = Scripted::default();
    let delay = Duration::from_millis(300);
    script.0.lock().unwrap().creates = VecDeque::from([
        Err(rate_limited(delay)),
        Err(rate_limited(delay)),
        Ok(order("after-the-wait")),
    ]);
    let client = client(start(script.clone()).await, Duration::from_secs(10));
    let started = Instant::now();
    let made = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(made.order_id, "after-the-wait");
    assert!(
        started.elapsed() >= 2 * delay,
        "each retry waited the RetryInfo delay: {:?}",
        started.elapsed()
    );
    let calls = script.0.lock().unwrap().create_calls.clone();
    assert_eq!(calls.len(), 3);
    assert!(
        calls.iter().all(|(key, _)| *key == calls[0].0),
        "one idempotency key for every attempt: {calls:?}"
    );
    let stats = *client.stats().borrow();
    assert_eq!((stats.retries, stats.throttled), (2, 0));
}

#[tokio::test]
async fn a_delay_longer_than_the_deadline_fails_at_once_with_the_refusal() {
    let script = Scripted::default();
    script.0.lock().unwrap().creates = VecDeque::from([
        Err(rate_limited(Duration::from_secs(3600))),
        Ok(order("never")),
    ]);
    let timeout = Duration::from_secs(30);
    let client = client(start(script.clone()).await, timeout);
    let started = Instant::now();
    let error = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    // Not DEADLINE_EXCEEDED: it did not wait for the deadline to pass.
    assert_eq!(error.code(), Code::ResourceExhausted, "{error}");
    assert_eq!(error.reason(), Some(reason::RATE_LIMITED));
    assert_eq!(error.retry_delay(), Some(Duration::from_secs(3600)));
    assert!(started.elapsed() < timeout);
    assert_eq!(script.0.lock().unwrap().create_calls.len(), 1);
}

#[tokio::test]
async fn a_delay_is_measured_against_what_is_left_of_the_deadline() {
    let script = Scripted::default();
    // The first wait fits in 2 s; the second, starting 1.2 s later, no longer does.
    let delay = Duration::from_millis(1200);
    script.0.lock().unwrap().creates = VecDeque::from([
        Err(rate_limited(delay)),
        Err(rate_limited(delay)),
        Ok(order("never")),
    ]);
    let client = client(start(script.clone()).await, Duration::from_secs(2));
    let error = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error}");
    assert_eq!(error.reason(), Some(reason::RATE_LIMITED));
    assert_eq!(script.0.lock().unwrap().create_calls.len(), 2);
}

#[tokio::test]
async fn a_rate_limited_watch_opens_after_the_delay_or_fails_at_once() {
    let script = Scripted::default();
    let delay = Duration::from_millis(300);
    {
        let mut script = script.0.lock().unwrap();
        script.watch_refusals.insert(1, rate_limited(delay));
        script.watches = VecDeque::from([(vec![event(1)], None)]);
    }
    let client = client(start(script.clone()).await, Duration::from_secs(10));
    let started = Instant::now();
    let mut watch = client
        .open_watch(WatchOrdersRequest::default(), CallOptions::new())
        .await
        .unwrap();
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(watch.next().await.unwrap().unwrap().sequence, 1);
    assert_eq!(script.0.lock().unwrap().watch_calls.len(), 2);

    script
        .0
        .lock()
        .unwrap()
        .watch_refusals
        .insert(3, rate_limited(Duration::from_secs(3600)));
    let error = client
        .open_watch(WatchOrdersRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error}");
    assert_eq!(error.reason(), Some(reason::RATE_LIMITED));
    assert_eq!(script.0.lock().unwrap().watch_calls.len(), 3);
}

#[tokio::test]
async fn a_watch_refused_on_re_opening_waits_the_delay_and_resumes() {
    let script = Scripted::default();
    let delay = Duration::from_millis(300);
    {
        let mut script = script.0.lock().unwrap();
        script.watches = VecDeque::from([
            (
                vec![event(1)],
                Some(Status::unavailable("replica going away")),
            ),
            (vec![event(2)], None),
        ]);
        script.watch_refusals.insert(2, rate_limited(delay));
    }
    let client = client(start(script.clone()).await, Duration::from_secs(10));
    let mut watch = client.watch_orders(WatchOrdersRequest::default(), CallOptions::new());
    assert_eq!(watch.next().await.unwrap().unwrap().sequence, 1);
    let cut = Instant::now();
    assert_eq!(watch.next().await.unwrap().unwrap().sequence, 2);
    assert!(
        cut.elapsed() >= delay,
        "the re-open waited the RetryInfo delay, not the backoff: {:?}",
        cut.elapsed()
    );
    assert_eq!(script.0.lock().unwrap().watch_calls, vec![0, 1, 1]);
}
