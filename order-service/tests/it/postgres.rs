//! The PostgreSQL store on a real server: two store instances on one database stand for two
//! replicas. The server comes from ORDER_STATUS_TEST_POSTGRES (`scripts/with-postgres.sh cargo
//! test …` starts a throwaway one); each test creates a database of its own and drops it. Without
//! the variable these tests fail, naming the script, rather than pass without testing anything.

use order_service::domain::{
    Change, CreateOrder, Error, ListQuery, NewOrder, OrderEvent, OrderId, OrderStatus, Principal,
    RawLineItem, RequestId, UnixMicros, UpdateStatus, Violations, Write,
};
use order_service::store::{
    Live, LiveReceiver, OrderStore, PostgresSettings, PostgresStore, Retention, StoreOptions,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;

/// The advisory lock key the stores prune under (store/postgres/prune.rs).
const PRUNE_LOCK: i64 = 0x6f72_6465_7273_2d70;
/// The advisory lock the test-only stall trigger waits on.
const STALL_LOCK: i64 = 4242;
/// Generous bound on waiting for something that must happen (not a timing assertion: only a
/// hang turns into a failure).
const PATIENCE: Duration = Duration::from_secs(60);

/// A database of one test on the test server.
pub(crate) struct TestDatabase {
    admin: tokio_postgres::Config,
    name: String,
}

impl TestDatabase {
    pub(crate) async fn create() -> TestDatabase {
        let url = std::env::var("ORDER_STATUS_TEST_POSTGRES").unwrap_or_else(|_| {
            panic!(
                "ORDER_STATUS_TEST_POSTGRES is not set: run the PostgreSQL tests with a server, \
                 e.g. `scripts/with-postgres.sh cargo test -p order-service --test it postgres`"
            )
        });
        let admin: tokio_postgres::Config = url.parse().expect("ORDER_STATUS_TEST_POSTGRES parses");
        let name = format!("it_{}", uuid::Uuid::now_v7().simple());
        connect(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDatabase { admin, name }
    }

    /// The URL of this database, for `--database-url`.
    pub(crate) fn url(&self) -> String {
        let url = std::env::var("ORDER_STATUS_TEST_POSTGRES").unwrap();
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base.to_owned(), format!("?{query}")),
            None => (url.clone(), String::new()),
        };
        let (server, _database) = base.rsplit_once('/').expect("a URL with a database");
        format!("{server}/{}{query}", self.name)
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        config
    }

    /// A connection of the test's own to its database.
    async fn client(&self) -> tokio_postgres::Client {
        connect(&self.config()).await
    }

    /// One replica's store.
    async fn store(&self, retention: Retention) -> Arc<PostgresStore> {
        let settings = PostgresSettings {
            config: self.config(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            // Writers stall on purpose in some tests: longer than any stall here.
            statement_timeout: Duration::from_secs(60),
        };
        let options = StoreOptions {
            retention,
            live_buffer: 10_000,
        };
        Arc::new(PostgresStore::open(settings, options).await.unwrap())
    }

    pub(crate) async fn remove(self) {
        connect(&self.admin)
            .await
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn keep() -> Retention {
    Retention {
        events: Duration::from_secs(7 * 24 * 3600),
        idempotency_keys: Duration::from_secs(48 * 3600),
    }
}

fn create(principal: &str, key: Option<&str>, customer: &str) -> Write {
    let mut violations = Violations::default();
    let item = RawLineItem {
        sku: "A-1",
        quantity: 2,
        unit_price_cents: 150,
    };
    let order = NewOrder::parse(customer, [item].into_iter(), "EUR", &mut violations)
        .expect("a valid order");
    Write {
        principal: Principal::new(principal),
        request_id: key.map(|key| RequestId::parse(key).unwrap()),
        change: Change::Create(CreateOrder {
            order_id: OrderId::generate(),
            order,
        }),
        now: UnixMicros::now(),
        trace_parent: None,
    }
}

fn update(id: &OrderId, target: OrderStatus, expected_version: Option<i64>) -> Write {
    Write {
        principal: Principal::new("p"),
        request_id: None,
        change: Change::UpdateStatus(UpdateStatus {
            order_id: id.clone(),
            target,
            expected_version,
            reason: String::new(),
        }),
        now: UnixMicros::now(),
        trace_parent: None,
    }
}

/// Waits until `condition` (a count of backends of the test's database) is at least `wanted`.
async fn wait_for_backends(client: &tokio_postgres::Client, condition: &str, wanted: i64) {
    let statement = format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND {condition}"
    );
    tokio::time::timeout(PATIENCE, async {
        loop {
            let count: i64 = client.query_one(&statement, &[]).await.unwrap().get(0);
            if count >= wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {wanted} backend(s) with {condition}"));
}

/// The next `count` live events of `receiver`.
async fn next_events(receiver: &mut LiveReceiver, count: usize) -> Vec<OrderEvent> {
    tokio::time::timeout(PATIENCE, async {
        let mut events = Vec::new();
        while events.len() < count {
            match receiver.recv().await.unwrap() {
                Live::Event(event) => events.push((*event).clone()),
                hole @ Live::Pruned { .. } => panic!("a hole in the live feed: {hole:?}"),
            }
        }
        events
    })
    .await
    .expect("live events arrive")
}

fn sequences(events: &[OrderEvent]) -> Vec<u64> {
    events.iter().map(|event| event.sequence).collect()
}

fn customers(events: &[OrderEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event.order.customer_id.as_str())
        .collect()
}

/// The classic trap, made to happen: a transaction that started first commits after a later one.
/// First a write on replica A stalls before it takes its sequences while one on replica B
/// commits; then a write on A stalls after taking them (holding the log head), and B's next
/// write must wait for it instead of committing a later sequence first. Watchers on both
/// replicas see every event once, in strictly increasing, contiguous order, and a reader never
/// sees a later sequence while an earlier one is still uncommitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_commits_never_hide_an_event_from_a_watcher() {
    let db = TestDatabase::create().await;
    let a = db.store(keep()).await;
    let b = db.store(keep()).await;
    let mut live_a = a.subscribe();
    let mut live_b = b.subscribe();
    let control = db.client().await;
    // Test-only triggers: a write of customer "stall" waits for STALL_LOCK when its order row is
    // inserted (before the head update); one of "stall-late" when its event is inserted (after
    // the head update, holding the head's row lock).
    control
        .batch_execute(&format!(
            r#"CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN PERFORM pg_advisory_xact_lock_shared({STALL_LOCK}); RETURN NEW; END $$;
               CREATE TRIGGER stall_orders BEFORE INSERT ON orders FOR EACH ROW
                   WHEN (NEW.customer_id = 'stall') EXECUTE FUNCTION test_stall();
               CREATE TRIGGER stall_events BEFORE INSERT ON order_events FOR EACH ROW
                   WHEN (NEW.snapshot LIKE '%"customer_id":"stall-late"%')
                   EXECUTE FUNCTION test_stall();"#
        ))
        .await
        .unwrap();

    // 1. A starts first and stalls inside its transaction; B commits meanwhile.
    control
        .execute("SELECT pg_advisory_lock($1)", &[&STALL_LOCK])
        .await
        .unwrap();
    let early = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.write(create("p", None, "stall"), None).await }
    });
    wait_for_backends(&control, "wait_event = 'advisory'", 1).await;
    let quick = b.write(create("p", None, "quick"), None).await.unwrap();
    assert!(
        !early.is_finished(),
        "A's write is still inside its transaction"
    );
    assert_eq!(
        sequences(&b.events_after(0, None, 100).await.unwrap()),
        [1],
        "B's write committed while A's earlier transaction is open"
    );
    control
        .execute("SELECT pg_advisory_unlock($1)", &[&STALL_LOCK])
        .await
        .unwrap();
    let stalled = early.await.unwrap().unwrap();
    assert_ne!(stalled.order.id, quick.order.id);

    // 2. A stalls holding the log head; B's write waits for the head instead of overtaking.
    control
        .execute("SELECT pg_advisory_lock($1)", &[&STALL_LOCK])
        .await
        .unwrap();
    let holding_head = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.write(create("p", None, "stall-late"), None).await }
    });
    wait_for_backends(&control, "wait_event = 'advisory'", 1).await;
    let behind = tokio::spawn({
        let b = Arc::clone(&b);
        async move { b.write(create("p", None, "after"), None).await }
    });
    // B's transaction waits for A's row lock on the log head.
    wait_for_backends(&control, "wait_event = 'transactionid'", 1).await;
    assert!(!holding_head.is_finished() && !behind.is_finished());
    assert_eq!(
        sequences(&a.events_after(0, None, 100).await.unwrap()),
        [1, 2],
        "nothing after 2 is visible while 3 is uncommitted"
    );
    control
        .execute("SELECT pg_advisory_unlock($1)", &[&STALL_LOCK])
        .await
        .unwrap();
    holding_head.await.unwrap().unwrap();
    behind.await.unwrap().unwrap();

    let expected = ["quick", "stall", "stall-late", "after"];
    for (replica, live) in [("A", &mut live_a), ("B", &mut live_b)] {
        let events = next_events(live, 4).await;
        assert_eq!(sequences(&events), [1, 2, 3, 4], "live events on {replica}");
        assert_eq!(customers(&events), expected, "live events on {replica}");
    }
    for store in [&a, &b] {
        let stored = store.events_after(0, None, 100).await.unwrap();
        assert_eq!(sequences(&stored), [1, 2, 3, 4]);
        assert_eq!(customers(&stored), expected);
        assert_eq!(store.log_bounds().await.unwrap().latest, 4);
    }
    drop((a, b));
    db.remove().await;
}

/// Concurrent duplicates of one key, half through each replica, make one order, and every
/// caller gets the first response (or REQUEST_IN_PROGRESS, which a retry resolves).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_on_two_replicas_make_one_order() {
    let db = TestDatabase::create().await;
    let replicas = [db.store(keep()).await, db.store(keep()).await];
    let first = create("p", Some("the-key"), "c-dup");
    let mut calls = JoinSet::new();
    for i in 0..50 {
        let store = Arc::clone(&replicas[i % 2]);
        let mut write = first.clone();
        // Each replica's handler generates its own id for the order it would create.
        if let Change::Create(create) = &mut write.change {
            create.order_id = OrderId::generate();
        }
        calls.spawn(async move { store.write(write, None).await });
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(outcome) => {
                ids.insert(outcome.order.id.clone());
                created += usize::from(!outcome.replayed);
            }
            Err(Error::RequestInProgress) => {}
            Err(other) => panic!("a duplicate failed: {other:?}"),
        }
    }
    assert_eq!(ids.len(), 1, "every caller got the same order: {ids:?}");
    assert_eq!(created, 1);
    let page = replicas[1]
        .list(&ListQuery {
            page_size: 100,
            after: 0,
            status: None,
            customer_id: None,
        })
        .await
        .unwrap();
    assert_eq!(page.orders.len(), 1);
    assert_eq!(
        sequences(&replicas[0].events_after(0, None, 100).await.unwrap()),
        [1]
    );
    // The same key with another request is refused, on either replica.
    let other = create("p", Some("the-key"), "someone-else");
    for store in &replicas {
        assert!(matches!(
            store.write(other.clone(), None).await,
            Err(Error::IdempotencyKeyReused)
        ));
    }
    drop(replicas);
    db.remove().await;
}

/// Two updates of one version through different replicas: exactly one wins, the other is told
/// the version moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_version_on_two_replicas_one_wins() {
    let db = TestDatabase::create().await;
    let a = db.store(keep()).await;
    let b = db.store(keep()).await;
    for round in 0..10 {
        let order = a
            .write(create("p", None, &format!("c-{round}")), None)
            .await
            .unwrap()
            .order;
        let (on_a, on_b) = tokio::join!(
            a.write(update(&order.id, OrderStatus::Paid, Some(1)), None),
            b.write(update(&order.id, OrderStatus::Cancelled, Some(1)), None),
        );
        let (won, lost) = match (on_a, on_b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            other => panic!("not exactly one winner: {other:?}"),
        };
        assert_eq!(won.order.version, 2);
        assert!(
            matches!(
                lost,
                Error::VersionMismatch {
                    expected: 1,
                    actual: 2
                }
            ),
            "{lost:?}"
        );
        assert_eq!(b.order(&order.id).await.unwrap(), won.order);
        assert_eq!(
            a.latest_event(&order.id).await.unwrap().unwrap().order,
            won.order
        );
    }
    // Listing with filters and pages, on the other replica.
    let query = |status, customer: Option<&str>, after| ListQuery {
        page_size: 3,
        after,
        status,
        customer_id: customer.map(|c| order_service::domain::CustomerId::parse(c).unwrap()),
    };
    let all = b.list(&query(None, None, 0)).await.unwrap();
    assert_eq!(all.orders.len(), 3);
    let rest = b
        .list(&query(None, None, all.next_after.unwrap()))
        .await
        .unwrap();
    assert_eq!(rest.orders[0].customer_id.as_str(), "c-3");
    let paid = b
        .list(&query(Some(OrderStatus::Paid), None, 0))
        .await
        .unwrap()
        .orders;
    assert!(paid.iter().all(|order| order.status == OrderStatus::Paid));
    let one = b.list(&query(None, Some("c-7"), 0)).await.unwrap();
    assert_eq!(one.orders.len(), 1);
    assert_eq!(one.next_after, None);
    drop((a, b));
    db.remove().await;
}

/// Every server connection killed (as a PostgreSQL restart would): the next write costs at most
/// one UNAVAILABLE, health recovers, and live events flow between the replicas again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_are_ridden_out() {
    let db = TestDatabase::create().await;
    let a = db.store(keep()).await;
    let b = db.store(keep()).await;
    // B's tailer has published the first event before the kills: a subscription opened later
    // could otherwise still receive it (the live feed may hand a new subscriber events that
    // committed before it subscribed; a watch skips them), and take it for the round's event.
    let mut live_b = b.subscribe();
    let first = a.write(create("p", Some("k-0"), "c"), None).await.unwrap();
    assert_eq!(
        next_events(&mut live_b, 1).await[0].order.id,
        first.order.id
    );
    b.ping().await.unwrap();
    let control = db.client().await;
    for round in 1..=3 {
        let killed: i64 = control
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            killed >= 2,
            "the stores' connections were killed ({killed})"
        );
        let mut live_b = b.subscribe();
        let key = format!("k-{round}");
        let written = match a.write(create("p", Some(&key), "c"), None).await {
            Ok(written) => written,
            Err(Error::Unavailable(cause)) => {
                eprintln!("one UNAVAILABLE after the kill: {cause}");
                a.write(create("p", Some(&key), "c"), None).await.unwrap()
            }
            Err(other) => panic!("{other:?}"),
        };
        tokio::time::timeout(PATIENCE, async {
            while b.ping().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("health recovers");
        let event = next_events(&mut live_b, 1).await.remove(0);
        assert_eq!(event.order.id, written.order.id);
        assert_eq!(event.sequence, round + 1);
    }
    drop((a, b));
    db.remove().await;
}

/// Pruning runs once across the cluster: while one replica prunes (here: while the test holds
/// the prune lock) the others skip, and two replicas pruning at once agree on the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_runs_once_across_replicas() {
    let db = TestDatabase::create().await;
    let prune_all = Retention {
        events: Duration::ZERO,
        idempotency_keys: Duration::ZERO,
    };
    let a = db.store(prune_all).await;
    let b = db.store(prune_all).await;
    let first = a
        .write(create("p", Some("k"), "c"), None)
        .await
        .unwrap()
        .order;
    a.write(update(&first.id, OrderStatus::Paid, None), None)
        .await
        .unwrap();
    b.write(create("p", None, "d"), None).await.unwrap();
    // Events have microsecond times: let the clock pass the newest of them.
    tokio::time::sleep(Duration::from_millis(5)).await;

    let control = db.client().await;
    control
        .execute("SELECT pg_advisory_lock($1)", &[&PRUNE_LOCK])
        .await
        .unwrap();
    let (on_a, on_b) = tokio::join!(a.prune(), b.prune());
    on_a.unwrap();
    on_b.unwrap();
    assert_eq!(
        a.log_bounds().await.unwrap().complete_after,
        0,
        "both skipped"
    );
    assert_eq!(
        sequences(&a.events_after(0, None, 10).await.unwrap()),
        [1, 2, 3]
    );
    control
        .execute("SELECT pg_advisory_unlock($1)", &[&PRUNE_LOCK])
        .await
        .unwrap();

    let (on_a, on_b) = tokio::join!(a.prune(), b.prune());
    on_a.unwrap();
    on_b.unwrap();
    let bounds = b.log_bounds().await.unwrap();
    assert_eq!((bounds.complete_after, bounds.latest), (1, 3));
    assert!(matches!(
        a.events_after(0, None, 10).await,
        Err(Error::EventsExpired {
            requested: 0,
            oldest: 2
        })
    ));
    assert_eq!(
        sequences(&b.events_after(1, None, 10).await.unwrap()),
        [2, 3]
    );
    let keys: i64 = control
        .query_one("SELECT count(*) FROM idempotency_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 0, "idempotency keys past retention are gone");
    drop((a, b));
    db.remove().await;
}

/// Replicas starting together on a new database: one migrates, the others wait for it and find
/// the schema ready; all of them then serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_at_once_migrate_once() {
    let db = TestDatabase::create().await;
    let stores = futures::future::join_all((0..4).map(|_| db.store(keep()))).await;
    for (i, store) in stores.iter().enumerate() {
        store
            .write(create("p", None, &format!("c-{i}")), None)
            .await
            .unwrap();
    }
    let versions: Vec<i32> = db
        .client()
        .await
        .query(
            "SELECT version FROM order_service_schema ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(stores[3].log_bounds().await.unwrap().latest, 4);
    drop(stores);
    db.remove().await;
}

/// `sslmode=require` goes through rustls (on ring, with no second crypto provider to panic
/// over): against a server without TLS the store refuses to open, saying why, rather than
/// falling back to plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_never_falls_back_to_plaintext() {
    let db = TestDatabase::create().await;
    let mut config = db.config();
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let settings = PostgresSettings {
        config,
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    };
    let options = StoreOptions {
        retention: keep(),
        live_buffer: 16,
    };
    let Err(error) = PostgresStore::open(settings, options).await else {
        panic!("opened without TLS although sslmode=require");
    };
    let message = order_service::error_chain::DisplayChain(&error).to_string();
    eprintln!("sslmode=require refused: {message}");
    assert!(matches!(error, Error::Unavailable(_)), "{message}");
    assert!(
        message.to_lowercase().contains("tls") || message.to_lowercase().contains("ssl"),
        "{message}"
    );
    db.remove().await;
}

/// Writes queued behind busy writers go into one batch: one of them failing in the database
/// fails alone (its savepoint is rolled back, the others commit), and one whose deadline passed
/// while it waited is answered DEADLINE_EXCEEDED and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_or_expired_write_leaves_its_batch_alone() {
    let db = TestDatabase::create().await;
    let store = db.store(keep()).await;
    let control = db.client().await;
    control
        .batch_execute(&format!(
            r#"CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN PERFORM pg_advisory_xact_lock_shared({STALL_LOCK}); RETURN NEW; END $$;
               CREATE TRIGGER stall_orders BEFORE INSERT ON orders FOR EACH ROW
                   WHEN (NEW.customer_id = 'stall') EXECUTE FUNCTION test_stall();
               CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'poisoned order'; END $$;
               CREATE TRIGGER poison_orders BEFORE INSERT ON orders FOR EACH ROW
                   WHEN (NEW.customer_id = 'poison') EXECUTE FUNCTION test_poison();"#
        ))
        .await
        .unwrap();
    control
        .execute("SELECT pg_advisory_lock($1)", &[&STALL_LOCK])
        .await
        .unwrap();
    // Every writer task busy inside a stalled transaction.
    let mut stalled = JoinSet::new();
    for busy in 1..=3 {
        let store = Arc::clone(&store);
        stalled.spawn(async move { store.write(create("p", None, "stall"), None).await });
        // One at a time, so each is a batch of its own in a writer of its own.
        wait_for_backends(&control, "wait_event = 'advisory'", busy).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(20);
    let mut queued = JoinSet::new();
    for (i, customer) in ["good-1", "poison", "late", "good-2"]
        .into_iter()
        .enumerate()
    {
        let store = Arc::clone(&store);
        let deadline = (customer == "late").then_some(deadline);
        queued.spawn(async move {
            (
                i,
                store
                    .write(create("p", Some(&format!("k-{i}")), customer), deadline)
                    .await,
            )
        });
    }
    // Let the late write's deadline pass while it waits in the queue.
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline) + Duration::from_millis(5))
        .await;
    control
        .execute("SELECT pg_advisory_unlock($1)", &[&STALL_LOCK])
        .await
        .unwrap();
    while let Some(done) = stalled.join_next().await {
        done.unwrap().unwrap();
    }
    let mut answers = Vec::new();
    while let Some(done) = queued.join_next().await {
        answers.push(done.unwrap());
    }
    answers.sort_by_key(|(i, _)| *i);
    assert!(answers[0].1.is_ok(), "{:?}", answers[0]);
    assert!(
        matches!(&answers[1].1, Err(Error::Internal(cause)) if format!("{cause:?}").contains("poisoned")),
        "{:?}",
        answers[1]
    );
    assert!(
        matches!(answers[2].1, Err(Error::DeadlineExceeded)),
        "{:?}",
        answers[2]
    );
    assert!(answers[3].1.is_ok(), "{:?}", answers[3]);
    let stored = store.events_after(0, None, 100).await.unwrap();
    assert_eq!(sequences(&stored), [1, 2, 3, 4, 5]);
    let mut customers = customers(&stored);
    customers.sort();
    assert_eq!(customers, ["good-1", "good-2", "stall", "stall", "stall"]);
    // The failed and the expired writes left no idempotency record: their keys are free.
    let keys: i64 = control
        .query_one("SELECT count(*) FROM idempotency_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 2);
    drop(store);
    db.remove().await;
}

/// Writers spread over both replicas, a watcher on each: every acknowledged write's event
/// arrives once on both, in strictly increasing, contiguous order, the same on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_on_both_replicas_see_one_gap_free_order() {
    let db = TestDatabase::create().await;
    let replicas = [db.store(keep()).await, db.store(keep()).await];
    let mut watchers = [replicas[0].subscribe(), replicas[1].subscribe()];
    let mut writers = JoinSet::new();
    for writer in 0..8 {
        let store = Arc::clone(&replicas[writer % 2]);
        writers.spawn(async move {
            let mut written = Vec::new();
            for i in 0..25 {
                let order = store
                    .write(create("p", Some(&format!("w{writer}-{i}")), "c"), None)
                    .await
                    .unwrap()
                    .order;
                if i % 5 == 0 {
                    store
                        .write(update(&order.id, OrderStatus::Paid, Some(1)), None)
                        .await
                        .unwrap();
                }
                written.push(order.id);
            }
            written
        });
    }
    let mut acknowledged = HashSet::new();
    while let Some(done) = writers.join_next().await {
        acknowledged.extend(done.unwrap());
    }
    let total = 8 * 25 + 8 * 5;
    let mut seen = Vec::new();
    for watcher in &mut watchers {
        let events = next_events(watcher, total).await;
        assert_eq!(
            sequences(&events),
            (1..=total as u64).collect::<Vec<_>>(),
            "strictly increasing and contiguous"
        );
        let created: HashSet<OrderId> = events
            .iter()
            .filter(|event| event.previous_status.is_none())
            .map(|event| event.order.id.clone())
            .collect();
        assert_eq!(created, acknowledged, "every acknowledged order, once");
        seen.push(events);
    }
    assert_eq!(seen[0], seen[1], "both replicas publish the same log");
    drop(replicas);
    db.remove().await;
}

/// While the database refuses connections, health (ping) fails and writes are UNAVAILABLE;
/// once it accepts them again both recover without a restart of the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_the_database_refusing_and_accepting_connections() {
    let db = TestDatabase::create().await;
    let store = db.store(keep()).await;
    let mut live = store.subscribe();
    store.write(create("p", None, "c"), None).await.unwrap();
    // Published before the outage, so it cannot arrive late, after it, as if it were the next.
    next_events(&mut live, 1).await;
    // From the server's `postgres` database: PostgreSQL refuses to disallow connections to the
    // database the statement runs in.
    let control = connect(&db.admin).await;
    control
        .batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';",
            name = db.name
        ))
        .await
        .unwrap();
    // The terminated connections may take a moment to be noticed: ping until it fails.
    tokio::time::timeout(PATIENCE, async {
        while store.ping().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("ping fails while no connection can be opened");
    assert!(store.ping().await.is_err());
    assert!(matches!(
        store.write(create("p", Some("during"), "c"), None).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        store.order(&OrderId::generate()).await,
        Err(Error::Unavailable(_))
    ));
    control
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();
    store.ping().await.unwrap();
    let written = store
        .write(create("p", Some("during"), "c"), None)
        .await
        .unwrap();
    assert!(!written.replayed, "the refused write changed nothing");
    assert_eq!(
        next_events(&mut live, 1).await[0].order.id,
        written.order.id
    );
    drop(store);
    db.remove().await;
}
