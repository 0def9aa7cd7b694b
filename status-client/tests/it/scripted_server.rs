//! The client's retry, idempotency, deadline and resume rules against a scripted order-service
//! on a real socket: each RPC answers from a list of prepared outcomes and records what it was
//! sent, so the tests see exactly what went over the wire on each attempt.

use crate::support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use orders_proto::reason;
use orders_proto::v1::{CreateOrderRequest, Order, OrderEvent, WatchOrdersRequest};
use status_client::retry::{RetryPolicy, ThrottleSettings};
use status_client::{CallOptions, Client, Settings};
use support::{Scripted, start};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

fn client(addr: SocketAddr, max_attempts: u32) -> Client {
    let settings = Settings::from_endpoint_list(&format!("http://{addr}"))
        .unwrap()
        .with_token("t")
        .with_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            multiplier: 2.0,
        })
        .with_throttle(ThrottleSettings {
            max_tokens: 100.0,
            token_ratio: 1.0,
        });
    Client::new(settings).unwrap()
}

fn failure(code: Code, reason: &str) -> Status {
    Status::with_error_details(
        code,
        "scripted",
        ErrorDetails::with_error_info(reason, reason::DOMAIN, []),
    )
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

fn grpc_timeout_ms(header: &str) -> u64 {
    let (digits, unit) = header.split_at(header.len() - 1);
    let n: u64 = digits.parse().unwrap();
    match unit {
        "S" => n * 1000,
        "m" => n,
        "u" => n / 1000,
        "n" => n / 1_000_000,
        other => panic!("unexpected grpc-timeout unit {other}"),
    }
}

#[tokio::test]
async fn retryable_failures_are_retried_with_one_request_id_and_a_shrinking_grpc_timeout() {
    let script = Scripted::default();
    script.0.lock().unwrap().creates = VecDeque::from([
        Err(Status::unavailable("replica restarting")),
        Err(failure(Code::ResourceExhausted, reason::OVERLOADED)),
        Err(failure(Code::Aborted, reason::REQUEST_IN_PROGRESS)),
        Ok(order("made-once")),
    ]);
    let client = client(start(script.clone()).await, 5);
    let made = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(made.order_id, "made-once");

    let calls = script.0.lock().unwrap().create_calls.clone();
    assert_eq!(calls.len(), 4);
    let key = &calls[0].0;
    assert!(!key.is_empty());
    assert!(
        calls.iter().all(|(k, _)| k == key),
        "one key for every attempt: {calls:?}"
    );
    let budgets: Vec<u64> = calls
        .iter()
        .map(|(_, t)| grpc_timeout_ms(t.as_deref().expect("grpc-timeout sent")))
        .collect();
    assert!(budgets[0] <= 5000 && budgets[0] > 4000, "{budgets:?}");
    assert!(
        budgets.windows(2).all(|w| w[1] <= w[0]),
        "the remaining budget shrinks: {budgets:?}"
    );

    // The next logical call gets a new key; a caller's own key is used as given.
    script.0.lock().unwrap().creates = VecDeque::from([Ok(order("a")), Ok(order("b"))]);
    client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap();
    client
        .create_order(
            CreateOrderRequest::default(),
            CallOptions::new().request_id("callers-key"),
        )
        .await
        .unwrap();
    let calls = script.0.lock().unwrap().create_calls.clone();
    assert_ne!(&calls[4].0, key);
    assert_eq!(calls[5].0, "callers-key");
}

#[tokio::test]
async fn codes_and_reasons_where_retrying_does_not_help_are_returned_at_once() {
    let script = Scripted::default();
    let cases = [
        failure(Code::ResourceExhausted, "QUOTA"),
        failure(Code::Aborted, "VERSION_MISMATCH"),
        failure(Code::InvalidArgument, "VALIDATION_FAILED"),
        failure(Code::FailedPrecondition, "INVALID_TRANSITION"),
        failure(Code::PermissionDenied, "MISSING_SCOPE"),
        failure(Code::Unauthenticated, "UNKNOWN_TOKEN"),
        failure(Code::NotFound, "ORDER_NOT_FOUND"),
    ];
    let client = client(start(script.clone()).await, 5);
    for (i, status) in cases.iter().enumerate() {
        script.0.lock().unwrap().creates =
            VecDeque::from([Err(status.clone()), Ok(order("never"))]);
        let error = client
            .create_order(CreateOrderRequest::default(), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(error.code(), status.code());
        assert_eq!(
            error.reason(),
            status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.as_str())
        );
        assert_eq!(
            script.0.lock().unwrap().create_calls.len(),
            i + 1,
            "{:?} was retried",
            status.code()
        );
    }
}

#[tokio::test]
async fn server_pushback_is_obeyed() {
    let script = Scripted::default();
    let mut stop = Status::unavailable("do not come back");
    stop.metadata_mut()
        .insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
    let mut wait = Status::unavailable("come back soon");
    wait.metadata_mut()
        .insert("grpc-retry-pushback-ms", "30".parse().unwrap());
    script.0.lock().unwrap().creates = VecDeque::from([
        Err(wait),
        Ok(order("after-pushback")),
        Err(stop),
        Ok(order("never")),
    ]);
    let client = client(start(script.clone()).await, 5);

    let started = std::time::Instant::now();
    let made = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(made.order_id, "after-pushback");
    assert!(started.elapsed() >= Duration::from_millis(30));

    let error = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(
        script.0.lock().unwrap().create_calls.len(),
        3,
        "a negative pushback means no retry"
    );
}

#[tokio::test]
async fn a_watch_resumes_after_the_last_delivered_sequence_and_drops_repeats() {
    let script = Scripted::default();
    script.0.lock().unwrap().watches = VecDeque::from([
        (
            vec![event(1), event(2)],
            Some(failure(Code::ResourceExhausted, reason::WATCHER_TOO_SLOW)),
        ),
        (
            vec![event(3)],
            Some(failure(Code::Unavailable, "SHUTTING_DOWN")),
        ),
        // A server that replays one event too many: the client drops it.
        (
            vec![event(3), event(4)],
            Some(failure(Code::OutOfRange, reason::EVENTS_EXPIRED)),
        ),
    ]);
    let client = client(start(script.clone()).await, 5);
    let request = WatchOrdersRequest {
        order_id: String::new(),
        after_sequence: 0,
    };
    let items: Vec<_> = client
        .watch_orders(request, CallOptions::new())
        .collect()
        .await;
    let sequences: Vec<u64> = items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(|e| e.sequence)
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    let last = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(
        last.code(),
        Code::OutOfRange,
        "a final error ends the watch"
    );
    assert_eq!(script.0.lock().unwrap().watch_calls, [0, 2, 3]);
    assert_eq!(client.stats().borrow().watch_resumptions, 2);
}

#[tokio::test]
async fn a_live_watch_cut_before_its_first_event_resumes_from_the_servers_watch_from() {
    let script = Scripted::default();
    {
        let mut script = script.0.lock().unwrap();
        // Opened live at 0: the server says it starts after 41, then goes away before any event.
        script.watch_from = VecDeque::from([41, 41]);
        script.watches = VecDeque::from([
            (
                Vec::new(),
                Some(failure(Code::Unavailable, "SHUTTING_DOWN")),
            ),
            (vec![event(42), event(43)], None),
        ]);
    }
    let client = client(start(script.clone()).await, 5);
    let mut events = client
        .open_watch(WatchOrdersRequest::default(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(events.resume_point(), 41, "the server's orders-watch-from");
    assert_eq!(events.next().await.unwrap().unwrap().sequence, 42);
    assert_eq!(events.resume_point(), 42);
    assert_eq!(events.next().await.unwrap().unwrap().sequence, 43);
    assert_eq!(events.resume_point(), 43);
    assert_eq!(
        script.0.lock().unwrap().watch_calls,
        [0, 41],
        "the second stream asks for what came after 41, not for live-from-now"
    );
}

#[tokio::test]
async fn a_resume_point_is_never_lowered_and_an_order_watch_reopens_for_its_current_state() {
    let script = Scripted::default();
    {
        let mut script = script.0.lock().unwrap();
        // A resumed watch: a server naming an older point does not move it back.
        script.watch_from = VecDeque::from([3]);
        script.watches = VecDeque::from([(Vec::new(), None)]);
    }
    let client = client(start(script.clone()).await, 5);
    let resumed = client
        .open_watch(
            WatchOrdersRequest {
                order_id: String::new(),
                after_sequence: 10,
            },
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(resumed.resume_point(), 10);
    drop(resumed);

    // A one-order watch from 0 cut before its first event (the order's current state) opens
    // again at 0, for the state as it is then; its point is the snapshot's once delivered.
    {
        let mut script = script.0.lock().unwrap();
        script.watch_calls.clear();
        script.watch_from = VecDeque::from([7, 9]);
        script.watches = VecDeque::from([
            (
                Vec::new(),
                Some(failure(Code::Unavailable, "SHUTTING_DOWN")),
            ),
            (vec![event(9)], None),
        ]);
    }
    let mut order = client
        .open_watch(
            WatchOrdersRequest {
                order_id: "o".to_owned(),
                after_sequence: 0,
            },
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(order.resume_point(), 0, "no snapshot delivered yet");
    assert_eq!(order.next().await.unwrap().unwrap().sequence, 9);
    assert_eq!(order.resume_point(), 9);
    assert_eq!(script.0.lock().unwrap().watch_calls, [0, 0]);
}
