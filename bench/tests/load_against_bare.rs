//! The load generator against an in-process bare server on port 0: both workloads complete
//! calls, count them as OK, record one latency per OK call, and errors are tallied by code.

use order_status_bench::bare::BareOrders;
use order_status_bench::load::{self, LoadSettings, Target, Workload};
use orders_proto::v1::order_service_server::OrderServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

fn settings() -> LoadSettings {
    LoadSettings {
        connections: 2,
        streams_per_connection: 4,
        warmup: Duration::from_millis(50),
        measure: Duration::from_millis(300),
        call_deadline: Duration::from_secs(5),
    }
}

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
async fn get_and_create_count_ok_calls_with_a_latency_each() {
    let target = bare_target().await;
    let ids = load::seed_orders(&target, 10, "seed", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ids.len(), 10);
    let workloads = [
        Workload::GetOrder {
            order_ids: Arc::from(ids),
        },
        Workload::CreateOrder {
            key_prefix: "test".into(),
        },
    ];
    for workload in &workloads {
        let result = load::run(&target, workload, settings(), None)
            .await
            .unwrap();
        assert!(result.ok > 0, "{workload:?}: no call completed");
        assert!(
            result.errors.is_empty(),
            "{workload:?}: {:?}",
            result.errors
        );
        assert_eq!(result.latencies_us.len() as u64, result.ok);
        assert_eq!(result.window, settings().measure);
    }
}

#[tokio::test]
async fn a_server_that_is_gone_fails_to_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let target = Target {
        url: format!("http://{addr}"),
        ca_certificate_pem: None,
        authorization: "Bearer x".parse().unwrap(),
        server_pid: std::process::id(),
    };
    let workload = Workload::CreateOrder {
        key_prefix: "gone".into(),
    };
    assert!(
        load::run(&target, &workload, settings(), None)
            .await
            .is_err()
    );
}
