//! The fan-out benchmark's client against an in-process bare server on port 0: watchers opened
//! over several connections receive every paced create's event exactly once, in order, with the
//! create's number read from the event, and a stream's start is its `orders-watch-from`.

use order_status_bench::bare::BareOrders;
use order_status_bench::fanout::check::SequenceAgreement;
use order_status_bench::fanout::creates::{self, Pace};
use order_status_bench::fanout::watchers::Watchers;
use order_status_bench::load::{self, Target};
use orders_proto::v1::order_service_server::OrderServiceServer;
use std::time::{Duration, Instant};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

async fn bare_target() -> Target {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(OrderServiceServer::new(BareOrders::default()))
            .serve_with_incoming(incoming),
    );
    Target {
        url: format!("http://{addr}"),
        ca_certificate_pem: None,
        authorization: "Bearer not-checked".parse().unwrap(),
        server_pid: std::process::id(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_gets_every_create_once_in_order() {
    let target = bare_target().await;
    let clock_base = Instant::now();
    let channel = load::connect(&target).await.unwrap();
    // An event before the watchers open: no watcher may receive it.
    let before = creates::paced(
        &target,
        &channel,
        Pace {
            per_second: 100.0,
            warmup: Duration::ZERO,
            measure: Duration::from_millis(5),
            deadline: Duration::from_secs(5),
        },
        1_000,
        "before",
        Instant::now(),
    )
    .await;
    assert_eq!(before.failures().count(), 0);

    let watchers = Watchers::open(&target, 5, 2, clock_base).await.unwrap();
    assert_eq!(watchers.count(), 5);
    let made = creates::paced(
        &target,
        &channel,
        Pace {
            per_second: 50.0,
            warmup: Duration::from_millis(40),
            measure: Duration::from_millis(100),
            deadline: Duration::from_secs(5),
        },
        7,
        "test",
        Instant::now() + Duration::from_millis(40),
    )
    .await;
    assert_eq!(made.failures().count(), 0);
    let events = made.records.len() as u64;
    assert!(events >= 3, "only {events} creates were paced");
    assert!(watchers.wait_for(events, Duration::from_secs(10)).await);
    assert_eq!(watchers.delivered(), 5 * events);

    let arrivals = watchers.take_arrivals();
    assert_eq!(arrivals.len() as u64, 5 * events);
    let mut agreement = SequenceAgreement::default();
    for arrival in &arrivals {
        assert!(
            made.records
                .iter()
                .any(|record| record.number == arrival.create),
            "{arrival:?} is not one of the creates made after the watchers opened"
        );
        agreement.observe(arrival.create, arrival.sequence);
    }
    assert_eq!(agreement.disagreements(), 0);
    watchers.for_each_log(|log| {
        assert!(log.check.problems(events).is_clean(), "{:?}", log.check);
        assert_eq!(log.ended, None);
    });
    assert!(watchers.take_arrivals().is_empty());
    watchers.close().await;
}
