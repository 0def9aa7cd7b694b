//! Several order-service processes (the real binary) on one PostgreSQL database: one event order
//! seen alike by watchers on every replica, idempotency and optimistic concurrency across
//! replicas, `kill -9` of a replica under writers, a watch resumed on another replica, and
//! status-client riding out a killed replica. PostgreSQL only: run through
//! `scripts/with-postgres.sh` (they fail without it).
//!
//! Nothing here waits on a clock for synchronisation: each wait is for a condition, with a
//! generous deadline that only turns a hang into a failure.

use crate::support;

use orders_proto::v1 as pb;
use pb::OrderStatus as S;
use pb::order_service_client::OrderServiceClient;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::*;
use tempfile::TempDir;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Longest wait for one event to reach a watcher (a hang, not a slow delivery, fails it).
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// One replica: the binary on port 0, its tokens in a directory of its own.
struct Replica {
    process: ServerProcess,
    _dir: TempDir,
}

impl Replica {
    fn addr(&self) -> std::net::SocketAddr {
        self.process.addr
    }

    async fn client(&self) -> OrderServiceClient<Channel> {
        client(self.addr()).await
    }
}

/// A replica on the database at `url`, started now.
fn start_replica(url: &str) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let process = ServerProcess::start_on(dir.path(), "127.0.0.1:0", url, &[]);
    Replica { process, _dir: dir }
}

/// `url` with `application_name` set, so that a test can tell that replica's sessions apart.
fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// A fresh PostgreSQL database and `count` replicas on it, started at once (so their
/// start-up migrations race, as they do when a deployment starts).
async fn replicas(count: usize) -> (TestDatabase, Vec<Replica>) {
    let db = Backend::Postgres.database().await;
    let starts: Vec<_> = (0..count)
        .map(|_| {
            let url = db.url.clone();
            tokio::task::spawn_blocking(move || {
                let dir = tempfile::tempdir().unwrap();
                let process = ServerProcess::start_on(dir.path(), "127.0.0.1:0", &url, &[]);
                Replica { process, _dir: dir }
            })
        })
        .collect();
    let mut started = Vec::new();
    for start in starts {
        started.push(start.await.unwrap());
    }
    (db, started)
}

/// Opens a watch as the reader.
async fn watch(
    replica: &Replica,
    order_id: &str,
    after_sequence: u64,
) -> Result<Streaming<pb::OrderEvent>, tonic::Status> {
    replica
        .client()
        .await
        .watch_orders(authed(
            pb::WatchOrdersRequest {
                order_id: order_id.into(),
                after_sequence,
            },
            READER,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn next(stream: &mut Streaming<pb::OrderEvent>, watcher: &str) -> pb::OrderEvent {
    tokio::time::timeout(EVENT_DEADLINE, stream.message())
        .await
        .unwrap_or_else(|_| panic!("{watcher}: no event within {EVENT_DEADLINE:?}"))
        .unwrap_or_else(|status| panic!("{watcher}: stream failed: {status:?}"))
        .unwrap_or_else(|| panic!("{watcher}: stream ended"))
}

/// What identifies an event whatever its sequence: the order and the version it made.
fn identity(event: &pb::OrderEvent) -> (String, i64) {
    let order = event.order.as_ref().expect("an event carries its order");
    (order.order_id.clone(), order.version)
}

fn assert_strictly_increasing(events: &[pb::OrderEvent], watcher: &str) {
    for pair in events.windows(2) {
        assert!(
            pair[0].sequence < pair[1].sequence,
            "{watcher}: sequence {} after {}",
            pair[1].sequence,
            pair[0].sequence
        );
    }
}

/// Every order in the database, through `client`, oldest first.
async fn all_orders(client: &mut OrderServiceClient<Channel>) -> Vec<pb::Order> {
    let mut orders = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_orders(authed(
                pb::ListOrdersRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                },
                READER,
            ))
            .await
            .unwrap()
            .into_inner();
        orders.extend(page.orders);
        if page.next_page_token.is_empty() {
            return orders;
        }
        page_token = page.next_page_token;
    }
}

async fn get(client: &mut OrderServiceClient<Channel>, order_id: &str) -> pb::Order {
    client
        .get_order(authed(
            pb::GetOrderRequest {
                order_id: order_id.into(),
            },
            READER,
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_starting_at_once_on_a_fresh_database_all_serve_one_log() {
    // Their start-up migrations race; each must come up and write to the same log.
    let (_db, replicas) = replicas(4).await;
    let mut watcher = watch(&replicas[0], "", 0).await.unwrap();
    let mut made = Vec::new();
    for replica in &replicas {
        made.push(create(&mut replica.client().await, "four").await);
    }
    let mut seen = Vec::new();
    for _ in 0..made.len() {
        seen.push(next(&mut watcher, "watcher on replica 0").await);
    }
    assert_strictly_increasing(&seen, "watcher on replica 0");
    let orders: Vec<_> = seen.into_iter().map(|event| event.order.unwrap()).collect();
    assert_eq!(orders, made);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_both_replicas_and_a_watcher_on_each_see_one_order() {
    let (_db, replicas) = replicas(2).await;
    let mut watchers = Vec::new();
    for replica in &replicas {
        watchers.push(watch(replica, "", 0).await.unwrap());
    }
    const WRITERS: usize = 4;
    const ORDERS_PER_WRITER: usize = 30;
    let mut channels = Vec::new();
    for replica in &replicas {
        channels.push(channel(replica.addr()).await);
    }
    // Each writer creates on one replica and pays through the other, alternating.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let clients: Vec<_> = channels
                .iter()
                .map(|channel| OrderServiceClient::new(channel.clone()))
                .collect();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..ORDERS_PER_WRITER {
                    let mut on = clients[(w + i) % 2].clone();
                    let order = create(&mut on, &format!("spread-{w}")).await;
                    acknowledged.push((order.order_id.clone(), order.version));
                    let mut other = clients[(w + i + 1) % 2].clone();
                    let paid = set_status(&mut other, &order.order_id, S::Paid)
                        .await
                        .unwrap();
                    acknowledged.push((paid.order_id, paid.version));
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let total = acknowledged.len();
    assert_eq!(total, WRITERS * ORDERS_PER_WRITER * 2);

    let mut seen_by = Vec::new();
    for (at, stream) in watchers.iter_mut().enumerate() {
        let name = format!("watcher on replica {at}");
        let mut seen = Vec::new();
        while seen.len() < total {
            seen.push(next(stream, &name).await);
        }
        assert_strictly_increasing(&seen, &name);
        let identities: Vec<_> = seen.iter().map(identity).collect();
        let distinct: HashSet<_> = identities.iter().cloned().collect();
        assert_eq!(distinct.len(), identities.len(), "{name}: an event twice");
        assert_eq!(
            distinct, acknowledged,
            "{name}: not every acknowledged write"
        );
        seen_by.push(
            seen.iter()
                .map(|event| (event.sequence, identity(event)))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(seen_by[0], seen_by[1], "the replicas' watchers disagree");

    // Nothing more: each watcher's next event is one made after the writers were done.
    let marker = create(&mut replicas[0].client().await, "marker").await;
    for (at, stream) in watchers.iter_mut().enumerate() {
        let event = next(stream, &format!("watcher on replica {at}")).await;
        assert_eq!(event.order.unwrap().order_id, marker.order_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_duplicates_of_one_key_across_replicas_make_one_order() {
    let (_db, replicas) = replicas(2).await;
    let mut channels = Vec::new();
    for replica in &replicas {
        channels.push(channel(replica.addr()).await);
    }
    let calls = (0..50).map(|i| {
        let channels = channels.clone();
        tokio::spawn(async move {
            // A caller retries REQUEST_IN_PROGRESS with the same key, on the other replica.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut at = i % 2;
            loop {
                let mut client = OrderServiceClient::new(channels[at].clone());
                match client
                    .create_order(authed(new_order("dup-across", "one-key"), WRITER))
                    .await
                {
                    Ok(order) => return order.into_inner(),
                    Err(status) => {
                        assert_eq!(status.code(), Code::Aborted, "{status:?}");
                        assert_eq!(reason(&status), "REQUEST_IN_PROGRESS");
                    }
                }
                assert!(Instant::now() < deadline, "still in progress after 60 s");
                at = 1 - at;
                tokio::task::yield_now().await;
            }
        })
    });
    let mut responses = Vec::new();
    for call in futures::future::join_all(calls).await {
        responses.push(call.unwrap());
    }
    assert!(
        responses.windows(2).all(|pair| pair[0] == pair[1]),
        "callers got different responses: {:?}",
        responses
            .iter()
            .map(|order| &order.order_id)
            .collect::<HashSet<_>>()
    );
    for replica in &replicas {
        let listed = replica
            .client()
            .await
            .list_orders(authed(
                pb::ListOrdersRequest {
                    customer_id: "dup-across".into(),
                    ..Default::default()
                },
                READER,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.orders, vec![responses[0].clone()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_version_through_different_replicas_have_one_winner() {
    let (_db, replicas) = replicas(2).await;
    let mut channels = Vec::new();
    for replica in &replicas {
        channels.push(channel(replica.addr()).await);
    }
    for round in 0..5 {
        let order = create(
            &mut OrderServiceClient::new(channels[round % 2].clone()),
            "race-across",
        )
        .await;
        // Both replicas have read the order (a cache, if any, holds version 1 on each).
        for channel in &channels {
            let seen = get(
                &mut OrderServiceClient::new(channel.clone()),
                &order.order_id,
            )
            .await;
            assert_eq!(seen, order);
        }
        let calls = (0..10).map(|i| {
            let mut client = OrderServiceClient::new(channels[i % 2].clone());
            let request = pb::UpdateOrderStatusRequest {
                order_id: order.order_id.clone(),
                status: if i % 4 < 2 { S::Paid } else { S::Cancelled } as i32,
                expected_version: 1,
                request_id: format!("race-{round}-{i}"),
                ..Default::default()
            };
            tokio::spawn(async move {
                client
                    .update_order_status(authed(request, WRITER))
                    .await
                    .map(tonic::Response::into_inner)
            })
        });
        let mut winners = Vec::new();
        for call in futures::future::join_all(calls).await {
            match call.unwrap() {
                Ok(updated) => winners.push(updated),
                Err(status) => {
                    assert_eq!(status.code(), Code::Aborted, "{status:?}");
                    assert_eq!(reason(&status), "VERSION_MISMATCH");
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(winners[0].version, 2);
        // Neither replica serves the old version afterwards (no stale read).
        for channel in &channels {
            let seen = get(
                &mut OrderServiceClient::new(channel.clone()),
                &order.order_id,
            )
            .await;
            assert_eq!(seen, winners[0], "round {round}: a stale read");
        }
    }
}

/// Creates an order with `key` (customer `key` too, so each key's orders can be counted),
/// starting on replica `prefer` and, when a call fails, retrying with the same key on the
/// other one; the replica that answered becomes the writer's preference.
async fn create_with_failover(
    channels: &[Channel],
    prefer: &mut usize,
    key: &str,
) -> (pb::Order, Vec<Code>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = Vec::new();
    loop {
        let mut client = OrderServiceClient::new(channels[*prefer].clone());
        let mut request = authed(new_order(key, key), WRITER);
        request.set_timeout(Duration::from_secs(20));
        match client.create_order(request).await {
            Ok(order) => return (order.into_inner(), failures),
            Err(status) => {
                assert!(
                    !matches!(
                        status.code(),
                        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition
                    ),
                    "{key}: refused, not failed: {status:?}"
                );
                failures.push(status.code());
            }
        }
        assert!(
            Instant::now() < deadline,
            "{key}: no replica took it in 60 s: {failures:?}"
        );
        *prefer = 1 - *prefer;
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_eight_writers_loses_nothing_and_doubles_nothing() {
    let (_db, mut replicas) = replicas(2).await;
    let mut channels = Vec::new();
    for replica in &replicas {
        channels.push(channel(replica.addr()).await);
    }
    const WRITERS: usize = 8;
    const ORDERS_PER_WRITER: usize = 25;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let channels = channels.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let progress = Arc::clone(&progress);
            tokio::spawn(async move {
                let mut prefer = w % 2;
                let mut made = HashMap::new();
                let mut failures = Vec::new();
                for i in 0..ORDERS_PER_WRITER {
                    let key = format!("kill-{w}-{i}");
                    let (order, failed) = create_with_failover(&channels, &mut prefer, &key).await;
                    failures.extend(failed);
                    made.insert(key, order);
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    progress.notify_waiters();
                }
                (made, failures)
            })
        })
        .collect();

    // Kill replica 0 once a good part of the writes is acknowledged, while the rest go on.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let notified = progress.notified();
        if acknowledged.load(Ordering::SeqCst) >= WRITERS * ORDERS_PER_WRITER / 4 {
            break;
        }
        assert!(
            tokio::time::timeout_at(deadline, notified).await.is_ok(),
            "the writers made no progress"
        );
    }
    replicas[0].process.kill_hard();

    let mut made = HashMap::new();
    let mut failures = Vec::new();
    for writer in writers {
        let (orders, failed) = writer.await.unwrap();
        made.extend(orders);
        failures.extend(failed);
    }
    assert_eq!(made.len(), WRITERS * ORDERS_PER_WRITER);
    eprintln!(
        "kill -9 under writers: {} failed calls retried on the other replica ({:?})",
        failures.len(),
        failures.iter().collect::<HashSet<_>>()
    );

    // Through the survivor: every acknowledged order once, and no key made a second order.
    let mut survivor = replicas[1].client().await;
    let stored = all_orders(&mut survivor).await;
    let mut by_key: HashMap<String, Vec<pb::Order>> = HashMap::new();
    for order in stored.iter().cloned() {
        by_key
            .entry(order.customer_id.clone())
            .or_default()
            .push(order);
    }
    for (key, order) in &made {
        let stored = by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(stored, std::slice::from_ref(order), "{key}");
    }
    assert_eq!(
        stored.len(),
        made.len(),
        "orders no acknowledged key accounts for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_on_the_other_replica_continues_exactly() {
    let (_db, mut replicas) = replicas(2).await;
    let mut writer_client = replicas[1].client().await;
    // One event before the watch, so that it can start from a known point.
    let start = create(&mut writer_client, "resume-start").await;
    let mut first = watch(&replicas[0], &start.order_id, 0).await.unwrap();
    let from = next(&mut first, "watcher on replica 0").await.sequence;
    drop(first);
    let mut stream = watch(&replicas[0], "", from).await.unwrap();

    // Writes through replica 1 only: killing replica 0 does not touch them.
    const ORDERS: usize = 100;
    let writer = tokio::spawn(async move {
        let mut acknowledged = HashSet::new();
        for _ in 0..ORDERS {
            let order = create(&mut writer_client, "resume").await;
            acknowledged.insert((order.order_id.clone(), order.version));
            let paid = set_status(&mut writer_client, &order.order_id, S::Paid)
                .await
                .unwrap();
            acknowledged.insert((paid.order_id, paid.version));
        }
        acknowledged
    });

    // Read a part on replica 0, then kill it under the watch.
    let mut seen = Vec::new();
    while seen.len() < 50 {
        seen.push(next(&mut stream, "watcher on replica 0").await);
    }
    replicas[0].process.kill_hard();
    // What was already on its way may still arrive; then the stream fails or ends.
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => panic!("the watch on the killed replica neither ended nor failed"),
            Ok(Ok(Some(event))) => seen.push(event),
            Ok(Ok(None) | Err(_)) => break,
        }
    }
    let resume_from = seen.last().unwrap().sequence;
    let mut resumed = watch(&replicas[1], "", resume_from).await.unwrap();
    let acknowledged = writer.await.unwrap();
    while seen.len() < acknowledged.len() {
        seen.push(next(&mut resumed, "watcher resumed on replica 1").await);
    }
    assert_strictly_increasing(&seen, "the watch across both replicas");
    let identities: Vec<_> = seen.iter().map(identity).collect();
    let distinct: HashSet<_> = identities.iter().cloned().collect();
    assert_eq!(distinct.len(), identities.len(), "an event twice");
    assert_eq!(distinct, acknowledged, "not every acknowledged write");
    let marker = create(&mut replicas[1].client().await, "marker").await;
    let event = next(&mut resumed, "watcher resumed on replica 1").await;
    assert_eq!(event.order.unwrap().order_id, marker.order_id);
}

/// How a replica leaves in [`status_client_rides_out_a_replica_that_leaves`].
#[derive(Clone, Copy, Debug)]
enum Leaving {
    /// `kill -9`.
    Killed,
    /// SIGTERM: drained gracefully.
    Drained,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_client_with_both_replicas_rides_out_a_killed_one() {
    status_client_rides_out_a_replica_that_leaves(Leaving::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_client_with_both_replicas_rides_out_a_drained_one() {
    status_client_rides_out_a_replica_that_leaves(Leaving::Drained).await;
}

async fn status_client_rides_out_a_replica_that_leaves(leaving: Leaving) {
    use status_client::proto as sc;
    use status_client::{CallOptions, Client, Settings};

    let (_db, mut replicas) = replicas(2).await;
    let endpoints = format!(
        "http://{},http://{}",
        replicas[0].addr(),
        replicas[1].addr()
    );
    let client = Client::new(
        Settings::from_endpoint_list(&endpoints)
            .unwrap()
            .with_token(WRITER)
            .with_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    let order = |key: &str| sc::CreateOrderRequest {
        customer_id: key.to_owned(),
        currency: "EUR".to_owned(),
        items: vec![sc::LineItem {
            sku: "SKU-1".to_owned(),
            quantity: 1,
            unit_price_cents: 100,
        }],
        ..Default::default()
    };
    let mut made = HashMap::new();
    // One caller after the other, so each call's retries are its own.
    for i in 0..40 {
        if i == 20 {
            match leaving {
                Leaving::Killed => replicas[0].process.kill_hard(),
                Leaving::Drained => replicas[0].process.terminate(),
            }
        }
        let key = format!("sc-{i}");
        let before = client.stats().borrow().retries;
        let created = client
            .create_order(order(&key), CallOptions::new().request_id(key.clone()))
            .await
            .unwrap_or_else(|error| panic!("call {i} failed: {error}"));
        let retries = client.stats().borrow().retries - before;
        assert!(retries <= 1, "{leaving:?}: call {i} took {retries} retries");
        made.insert(key, created);
    }
    if let Leaving::Drained = leaving {
        let exit = tokio::task::block_in_place(|| replicas[0].process.wait_exit());
        assert!(exit.success(), "the drained replica exited with {exit}");
    }
    let mut survivor = replicas[1].client().await;
    let stored = all_orders(&mut survivor).await;
    assert_eq!(stored.len(), made.len(), "one order per key");
    for stored in stored {
        let made = &made[&stored.customer_id];
        assert_eq!(made.order_id, stored.order_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_one_replica_see_writes_acknowledged_by_the_other() {
    let (_db, replicas) = replicas(2).await;
    let mut a = replicas[0].client().await;
    let mut b = replicas[1].client().await;
    for round in 0..20 {
        let (mut writer, mut reader) = if round % 2 == 0 {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        let key = format!("rw-{round}");
        let created = writer
            .create_order(authed(new_order(&key, &key), WRITER))
            .await
            .unwrap()
            .into_inner();
        // Read at once on the other replica: the order, the list, the key.
        assert_eq!(get(&mut reader, &created.order_id).await, created);
        let listed = reader
            .list_orders(authed(
                pb::ListOrdersRequest {
                    customer_id: key.clone(),
                    ..Default::default()
                },
                READER,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.orders, vec![created.clone()], "round {round}");
        let replayed = reader
            .create_order(authed(new_order(&key, &key), WRITER))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replayed, created, "round {round}: the key's replay");
        let reused = reader
            .create_order(authed(new_order("someone-else", &key), WRITER))
            .await
            .unwrap_err();
        assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");

        // An update on one, then a versioned update on the other against what the first said.
        let paid = set_status(&mut writer, &created.order_id, S::Paid)
            .await
            .unwrap();
        assert_eq!(get(&mut reader, &created.order_id).await, paid);
        let shipped = reader
            .update_order_status(authed(
                pb::UpdateOrderStatusRequest {
                    order_id: created.order_id.clone(),
                    status: S::Shipped as i32,
                    expected_version: paid.version,
                    ..Default::default()
                },
                WRITER,
            ))
            .await
            .unwrap_or_else(|status| panic!("round {round}: {status:?}"))
            .into_inner();
        assert_eq!(shipped.version, paid.version + 1);
        // The one-order watch on the first starts with the state the second made.
        let mut order_watch = watch(&replicas[round % 2], &created.order_id, 0)
            .await
            .unwrap();
        let snapshot = next(&mut order_watch, "order watch").await;
        assert_eq!(snapshot.order.as_ref(), Some(&shipped), "round {round}");
        // A stale version is refused on either replica.
        for client in [&mut a, &mut b] {
            let stale = client
                .update_order_status(authed(
                    pb::UpdateOrderStatusRequest {
                        order_id: created.order_id.clone(),
                        status: S::Delivered as i32,
                        expected_version: paid.version,
                        ..Default::default()
                    },
                    WRITER,
                ))
                .await
                .unwrap_err();
            assert_eq!(reason(&stale), "VERSION_MISMATCH", "round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_moves_to_the_other_replica_after_every_event() {
    let (_db, replicas) = replicas(2).await;
    let mut writers = [replicas[0].client().await, replicas[1].client().await];
    let first = create(&mut writers[0], "hop").await;
    let mut on = 0;
    // A watch of every order, from the first order's event on.
    let mut stream = watch(&replicas[on], &first.order_id, 0).await.unwrap();
    let mut last = next(&mut stream, "hop").await.sequence;
    stream = watch(&replicas[on], "", last).await.unwrap();
    for round in 0..30 {
        // Written through the replica the watch is about to leave; resumed on the other at once,
        // with the sequence just seen (which the other may not have published yet).
        let made = create(&mut writers[on], "hop").await;
        let event = next(&mut stream, "hop").await;
        assert_eq!(event.order.as_ref(), Some(&made), "round {round}");
        assert!(event.sequence > last);
        last = event.sequence;
        on = 1 - on;
        stream = watch(&replicas[on], "", last)
            .await
            .unwrap_or_else(|status| panic!("round {round}: resume at {last} refused: {status:?}"));
    }
    let made = create(&mut writers[1 - on], "hop").await;
    let event = next(&mut stream, "hop").await;
    assert_eq!(event.order.as_ref(), Some(&made));
    assert!(event.sequence > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_prune_never_delivers_a_silent_gap_to_a_live_watch() {
    let db = Backend::Postgres.database().await;
    // Replica 1 names its sessions, so the test can see what they hold.
    let replicas = [
        start_replica(&db.url),
        start_replica(&with_application_name(&db.url, "lagging-replica")),
    ];
    let observer = support::postgres::connect(&db.url).await;
    // A live watch on replica 1, opened on the empty log: it owes every event from 1 on.
    let (mut live, from) = {
        let response = replicas[1]
            .client()
            .await
            .watch_orders(authed(pb::WatchOrdersRequest::default(), READER))
            .await
            .unwrap();
        let from: u64 = response
            .metadata()
            .get("orders-watch-from")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (response.into_inner(), from)
    };
    assert_eq!(from, 0);
    // Replica 1 is frozen, so it cannot read what replica 0 writes meanwhile; but not in the
    // middle of its own start-up prune, whose cluster-wide lock would keep the pruning replica
    // below from pruning (then it is let run until that lock is gone, and frozen again).
    // (Replica 0 may be pruning too; it is not frozen, so that ends by itself.)
    let advisory_locks = "SELECT count(*),
                                 count(*) FILTER (WHERE a.application_name = 'lagging-replica')
                          FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                          WHERE l.locktype = 'advisory'";
    let deadline = Instant::now() + Duration::from_secs(60);
    replicas[1].process.pause().await;
    loop {
        let row = observer.query_one(advisory_locks, &[]).await.unwrap();
        let (held, by_frozen): (i64, i64) = (row.get(0), row.get(1));
        if held == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an advisory lock (a prune) was held for 60 s"
        );
        // Polled: a lock's release has no notification.
        if by_frozen > 0 {
            replicas[1].process.resume();
            tokio::time::sleep(Duration::from_millis(20)).await;
            replicas[1].process.pause().await;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut writer = replicas[0].client().await;
    let mut log = watch(&replicas[0], "", 0).await.unwrap();
    let w = create(&mut writer, "lag").await;
    let x = create(&mut writer, "lag").await;
    set_status(&mut writer, &x.order_id, S::Paid).await.unwrap();
    let mut written = Vec::new();
    for _ in 0..3 {
        written.push(next(&mut log, "watcher on replica 0").await);
    }
    assert_eq!(written[0].order.as_ref(), Some(&w));
    // A third replica with no event retention prunes at start: x's creation goes (each order's
    // latest event stays). Wait until replica 0 refuses a replay from before it.
    let dir = tempfile::tempdir().unwrap();
    let pruner = ServerProcess::start_on(
        dir.path(),
        "127.0.0.1:0",
        &db.url,
        &["--event-retention", "0s"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let refused = match watch(&replicas[0], "", written[0].sequence).await {
            Err(status) => Some(status),
            Ok(mut stream) => stream.message().await.err(),
        };
        if let Some(status) = refused {
            assert_eq!(reason(&status), "EVENTS_EXPIRED", "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pruning replica never pruned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(pruner);

    // Replica 1 wakes up behind the prune. Its live watch may end with an error, but whatever
    // it delivers must be the log without a hole: w, x created, x paid.
    replicas[1].process.resume();
    let mut delivered = Vec::new();
    let ended = loop {
        match tokio::time::timeout(EVENT_DEADLINE, live.message()).await {
            Err(_) => panic!(
                "the live watch on replica 1 neither delivered nor ended; delivered {delivered:?} \
                 of {:?}",
                written
                    .iter()
                    .map(|e| (e.sequence, identity(e)))
                    .collect::<Vec<_>>()
            ),
            Ok(Ok(Some(event))) => {
                let at = delivered.len();
                assert_eq!(
                    (event.sequence, identity(&event)),
                    (written[at].sequence, identity(&written[at])),
                    "a silent gap in a live watch: after {delivered:?} it delivered sequence {} \
                     where the log had {} (since pruned)",
                    event.sequence,
                    written[at].sequence
                );
                delivered.push(identity(&event));
                if delivered.len() == written.len() {
                    break None;
                }
            }
            Ok(Ok(None)) => break Some("ended".to_owned()),
            Ok(Err(status)) => break Some(format!("{:?} {}", status.code(), status.message())),
        }
    };
    let expected: Vec<_> = written.iter().map(identity).collect();
    assert_eq!(
        delivered,
        expected[..delivered.len()].to_vec(),
        "a silent gap in a live watch (then: {ended:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_holding_the_log_head_does_not_stop_the_others_writing() {
    let db = Backend::Postgres.database().await;
    // Replica 0 names its sessions, so the test can see what they hold.
    let named = with_application_name(&db.url, "frozen-replica");
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let frozen = ServerProcess::start_on(dirs[0].path(), "127.0.0.1:0", &named, &[]);
    let other = ServerProcess::start_on(dirs[1].path(), "127.0.0.1:0", &db.url, &[]);
    let observer = support::postgres::connect(&db.url).await;

    // Writers keep replica 0 busy; its calls hang while it is frozen, which is fine.
    let frozen_channel = channel(frozen.addr).await;
    let stop = tokio_util::sync::CancellationToken::new();
    // Stops them also when the test fails (their replica is gone then, and a loop of calls
    // that fail at once would never yield to the runtime's shutdown).
    let _stop_writers = stop.clone().drop_guard();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut client = OrderServiceClient::new(frozen_channel.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let mut request = authed(new_order(&format!("busy-{w}"), ""), WRITER);
                    request.set_timeout(Duration::from_secs(120));
                    if client.create_order(request).await.is_err() {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();

    // Freeze replica 0 at a moment when one of its sessions is "idle in transaction" holding
    // the log head's row (RowExclusiveLock on event_log_head, taken by the head UPDATE): it has
    // done all it was sent and waits for its frozen client.
    let holds_head = "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                      WHERE a.application_name = 'frozen-replica'
                        AND a.state = 'idle in transaction'
                        AND l.relation = 'event_log_head'::regclass
                        AND l.mode = 'RowExclusiveLock' AND l.granted";
    // After the other replica wrote: did that session commit after all (a COMMIT already in
    // its socket when it was seen idle)? Then the catch proved nothing and is made again.
    let committed_after_all = "SELECT count(*) FROM pg_stat_activity
                               WHERE pid = $1 AND state = 'idle'";
    let mut client = other.client().await;
    let mut attempts = 0;
    let written = 'catch: loop {
        attempts += 1;
        assert!(
            attempts <= 2000,
            "replica 0 was never caught holding the log head"
        );
        frozen.pause().await;
        let holders = observer.query(holds_head, &[]).await.unwrap();
        // And the head row is locked right now (a probe that does not wait for it fails).
        let row_locked = observer
            .batch_execute("BEGIN; SELECT last FROM event_log_head FOR UPDATE NOWAIT; ROLLBACK")
            .await
            .map_err(|error| error.code().cloned())
            .err();
        if row_locked.is_some() {
            observer.batch_execute("ROLLBACK").await.unwrap();
        }
        let (Some(holder), Some(Some(tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE))) =
            (holders.first(), row_locked)
        else {
            frozen.resume();
            tokio::task::yield_now().await;
            continue;
        };
        let holder: i32 = holder.get(0);

        // The other replica must still commit writes: a frozen process (a stop signal, a VM
        // paused, a long stall) must not hold the cluster's one log head for ever.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut failures = Vec::new();
        let written = loop {
            let mut request = authed(new_order("while-frozen", "while-frozen-key"), WRITER);
            request.set_timeout(Duration::from_secs(30));
            match client.create_order(request).await {
                Ok(order) => break order.into_inner(),
                Err(status) => failures.push(format!("{:?}: {}", status.code(), status.message())),
            }
            assert!(
                Instant::now() < deadline,
                "replica 1 committed nothing in 60 s while replica 0 was frozen holding the log \
                 head (session {holder}, caught after {attempts} attempts); its answers: \
                 {failures:?}"
            );
        };
        let after_all: i64 = observer
            .query_one(committed_after_all, &[&holder])
            .await
            .unwrap()
            .get(0);
        frozen.resume();
        if after_all == 0 {
            break 'catch written;
        }
    };
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(get(&mut client, &written.order_id).await, written);
}
