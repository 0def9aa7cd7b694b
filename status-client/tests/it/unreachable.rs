//! Calls while no server can be reached: a request that never reached one is sent again until
//! the deadline without spending the attempt limit or the throttle, a server that comes up in
//! time answers it, a connection that broke after it was made is not mistaken for one that
//! was never made, and a watch that cannot open in time is DEADLINE_EXCEEDED.

use crate::support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use orders_proto::v1::{CreateOrderRequest, Order, WatchOrdersRequest};
use status_client::retry::{RetryPolicy, ThrottleSettings};
use status_client::{CallOptions, Client, Settings};
use support::{Scripted, start_on};
use tokio::io::AsyncReadExt;
use tonic::Code;

fn client(addr: SocketAddr, timeout: Duration, max_attempts: u32) -> Client {
    let settings = Settings::from_endpoint_list(&format!("http://{addr}"))
        .unwrap()
        .with_token("t")
        .with_timeout(timeout)
        .with_retry(RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(40),
            multiplier: 2.0,
        })
        // gRFC A6's defaults: retries stop once five failed attempts have taken their tokens.
        .with_throttle(ThrottleSettings::default());
    Client::new(settings).unwrap()
}

/// An address where nothing listens: a port that was just bound and released.
fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn a_call_that_reaches_no_server_keeps_trying_until_its_deadline_without_spending_retries() {
    let deadline = Duration::from_millis(600);
    let client = client(dead_addr(), deadline, 2);
    for _ in 0..2 {
        let started = Instant::now();
        let error = client
            .get_order("any", CallOptions::new())
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
        assert!(error.message().contains("refused"), "{error}");
        assert!(error.message().starts_with("deadline of 600ms"), "{error}");
        assert!(
            elapsed >= deadline,
            "gave up before the deadline: {elapsed:?}"
        );
    }
    let stats = *client.stats().borrow();
    assert!(
        stats.attempts > 2 * 2,
        "more attempts than the limit of 2 per call: {stats:?}"
    );
    assert_eq!(stats.throttled, 0, "no throttle token was spent: {stats:?}");
}

#[tokio::test]
async fn a_server_that_comes_up_before_the_deadline_answers_the_call() {
    let addr = dead_addr();
    let client = client(addr, Duration::from_secs(10), 2);
    let mut stats = client.stats();
    let mut call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .create_order(CreateOrderRequest::default(), CallOptions::new())
                .await
        }
    });
    // Well past the attempt limit of 2 while nothing listens.
    tokio::select! {
        tried = stats.wait_for(|s| s.attempts >= 5) => {
            tried.unwrap();
        }
        ended = &mut call => panic!("the call ended while no server listened: {ended:?}"),
    }
    let script = Scripted::default();
    script.0.lock().unwrap().creates = VecDeque::from([Ok(Order {
        order_id: "made-once".into(),
        ..Default::default()
    })]);
    start_on(script.clone(), addr).await;
    let order = call
        .await
        .unwrap()
        .expect("the server that came up answers");
    assert_eq!(order.order_id, "made-once");
    assert_eq!(script.0.lock().unwrap().create_calls.len(), 1);
}

#[tokio::test]
async fn a_connection_that_breaks_after_it_was_made_counts_as_reaching_the_server() {
    // Accepts, reads what the client sends, and hangs up without a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
        }
    });
    let client = client(addr, Duration::from_secs(10), 3);
    let error = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    // Maybe processed, as far as the client can tell: only the attempt limit's retries.
    assert_eq!(error.code(), Code::Unavailable, "{error}");
    assert!(!error.never_reached_a_server(), "{error}");
    assert_eq!(client.stats().borrow().attempts, 3);
}

#[tokio::test]
async fn a_watch_that_cannot_open_in_time_is_deadline_exceeded_with_a_readable_duration() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let silent = client(addr, Duration::from_secs(1), 5);
    let error = silent
        .open_watch(WatchOrdersRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(
        error.message().starts_with("deadline of 1s exceeded"),
        "{error}"
    );
    held.abort();

    // Nothing listening at all: tried until the deadline, then DEADLINE_EXCEEDED too.
    let dead = client(dead_addr(), Duration::from_millis(500), 5);
    let started = Instant::now();
    let error = dead
        .open_watch(WatchOrdersRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(
        error.message().starts_with("deadline of 500ms exceeded"),
        "{error}"
    );
    assert!(error.message().contains("refused"), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connection to it
/// neither succeeds nor fails — the way a stopped container's or a lost host's address behaves.
async fn silent_addr() -> (
    SocketAddr,
    Vec<tokio::net::TcpStream>,
    tokio::net::TcpListener,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the queue (never accepted); the connects that fit complete at once.
    let mut queued = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    (addr, queued, listener)
}

#[tokio::test]
async fn a_replica_whose_address_stopped_answering_costs_one_attempt_not_the_call() {
    let (silent, _queued, _listener) = silent_addr().await;
    let script = Scripted::default();
    script
        .0
        .lock()
        .unwrap()
        .creates
        .push_back(Ok(Order::default()));
    let live = support::start(script.clone()).await;
    // The silent replica first in the list: the first attempt goes there.
    let settings = Settings::from_endpoint_list(&format!("http://{silent},http://{live}"))
        .unwrap()
        .with_token("t")
        .with_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_millis(300));
    let client = Client::new(settings).unwrap();
    let answer = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await;
    assert!(
        answer.is_ok(),
        "the call should have gone on to the live replica: {answer:?}"
    );
    assert_eq!(script.0.lock().unwrap().create_calls.len(), 1);
}

#[test]
fn the_default_connect_timeout_leaves_room_for_another_attempt_within_a_short_deadline() {
    // The gateway's deadline in the compose stack is 2 s; a connection attempt must fail well
    // before that for the call to reach another replica.
    assert!(status_client::settings::DEFAULT_CONNECT_TIMEOUT * 2 <= Duration::from_secs(2));
    assert_eq!(
        Settings::from_endpoint_list("http://127.0.0.1:1")
            .unwrap()
            .connect_timeout,
        status_client::settings::DEFAULT_CONNECT_TIMEOUT
    );
}
