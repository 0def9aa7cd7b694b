//! Webhooks end to end: a real order-service (in-process, or the binary as a child process)
//! delivering to real HTTP receivers on 127.0.0.1:0 (allowed with
//! `--webhook-allow-networks 127.0.0.0/8`), managed over orders.v1.WebhookService.

use crate::support::{self, HOOK_ADMIN, ServerProcess, TestServer, WRITER, authed};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use orders_proto::v1 as pb;
use orders_proto::v1::webhook_service_client::WebhookServiceClient;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Channel;

/// Lets deliveries reach the receivers on loopback.
const ALLOW_LOOPBACK: [&str; 2] = ["--webhook-allow-networks", "127.0.0.0/8"];
/// Longest a test waits for something that should happen in milliseconds.
const PATIENCE: Duration = Duration::from_secs(30);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn sequence(&self) -> u64 {
        let json = self.json();
        let sequence = &json["data"]["sequence"];
        sequence
            .as_str()
            .map(|s| s.parse().unwrap())
            .or_else(|| sequence.as_u64())
            .unwrap()
    }
}

/// What a receiver answers to the next request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Never answers.
    Hang,
}

/// An HTTP/1.1 receiver on 127.0.0.1:0: records every request, then answers with the next
/// scripted answer (200 when the script is empty).
struct Receiver {
    addr: SocketAddr,
    got: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start(script: &[Answer]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, got) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let answers = script;
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let sender = sender.clone();
                let answers = Arc::clone(&answers);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let sender = sender.clone();
                            let answers = Arc::clone(&answers);
                            async move {
                                let header = |name: &str| {
                                    request
                                        .headers()
                                        .get(name)
                                        .map(|v| v.to_str().unwrap().to_owned())
                                        .unwrap_or_default()
                                };
                                let (id, timestamp, signature) = (
                                    header("webhook-id"),
                                    header("webhook-timestamp"),
                                    header("webhook-signature"),
                                );
                                let body = request.into_body().collect().await?.to_bytes().to_vec();
                                let _ = sender.send(Received {
                                    id,
                                    timestamp,
                                    signature,
                                    body,
                                });
                                let answer = answers
                                    .lock()
                                    .unwrap()
                                    .pop_front()
                                    .unwrap_or(Answer::Status(200));
                                let status = match answer {
                                    Answer::Status(status) => status,
                                    Answer::Hang => std::future::pending().await,
                                };
                                Ok::<_, hyper::Error>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"ok")))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// The next request (waiting at most [`PATIENCE`]).
    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.got.recv())
            .await
            .expect("no delivery arrived")
            .expect("the receiver stopped")
    }
}

async fn hooks(addr: SocketAddr) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(support::channel(addr).await)
}

async fn create_endpoint(
    client: &mut WebhookServiceClient<Channel>,
    url: &str,
    event_types: &[&str],
) -> (pb::WebhookEndpoint, String) {
    let response = client
        .create_webhook_endpoint(authed(
            pb::CreateWebhookEndpointRequest {
                request_id: support::uuid_like(),
                url: url.to_owned(),
                event_types: event_types.iter().map(|s| (*s).to_owned()).collect(),
                description: "test receiver".into(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    (response.endpoint.unwrap(), response.secret)
}

async fn endpoint(client: &mut WebhookServiceClient<Channel>, id: &str) -> pb::WebhookEndpoint {
    client
        .get_webhook_endpoint(authed(
            pb::GetWebhookEndpointRequest {
                endpoint_id: id.to_owned(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn deliveries(
    client: &mut WebhookServiceClient<Channel>,
    id: &str,
) -> Vec<pb::WebhookDelivery> {
    client
        .list_webhook_deliveries(authed(
            pb::ListWebhookDeliveriesRequest {
                endpoint_id: id.to_owned(),
                page_size: 100,
                page_token: String::new(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

/// Polls `check` until it returns `Some`, for at most [`PATIENCE`].
async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < give_up, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The signature an independent HMAC-SHA256 (RustCrypto's) computes for `received`.
fn independent_signature(secret: &str, received: &Received) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2_11::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn deliveries_are_signed_in_order_and_acknowledged_in_the_log() {
    let server = TestServer::start_with(&ALLOW_LOOPBACK).await;
    let mut receiver = Receiver::start(&[]).await;
    let mut client = hooks(server.addr).await;
    let (created, secret) = create_endpoint(&mut client, &receiver.url(), &[]).await;
    assert!(secret.starts_with("whsec_"));
    assert!(STANDARD.decode(&secret[6..]).unwrap().len() >= 24);
    let mut orders = server.client().await;
    let order = support::create(&mut orders, "c-1").await;
    support::set_status(&mut orders, &order.order_id, pb::OrderStatus::Paid)
        .await
        .unwrap();

    let first = receiver.next().await;
    let second = receiver.next().await;
    for received in [&first, &second] {
        assert_eq!(received.signature, independent_signature(&secret, received));
        assert_eq!(
            received.id,
            format!("evt_{}_{}", created.endpoint_id, received.sequence())
        );
        let age = order_status_webhooks::unix_now() - received.timestamp.parse::<i64>().unwrap();
        assert!(
            age.abs() < 300,
            "timestamp {} is not now",
            received.timestamp
        );
    }
    assert_eq!(first.json()["type"], "order.created");
    assert_eq!(second.json()["type"], "order.status_changed");
    assert_eq!(
        first.json()["data"]["order"]["orderId"],
        order.order_id.as_str()
    );
    assert_eq!(
        second.json()["data"]["order"]["status"],
        "ORDER_STATUS_PAID"
    );
    assert!(first.json()["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(first.sequence() < second.sequence());

    let through = second.sequence();
    let endpoint = eventually(|| {
        let mut client = client.clone();
        let id = created.endpoint_id.clone();
        async move {
            let endpoint = endpoint(&mut client, &id).await;
            (endpoint.delivered_through_sequence == through).then_some(endpoint)
        }
    })
    .await;
    assert!(endpoint.enabled);
    let log = deliveries(&mut client, &created.endpoint_id).await;
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|d| d.delivered && d.http_status == 200 && d.attempt == 1)
    );
    assert_eq!(log[0].sequence, through, "newest first");
}

#[tokio::test]
async fn webhook_calls_need_the_webhooks_admin_scope_and_valid_fields() {
    let server = TestServer::start_with(&ALLOW_LOOPBACK).await;
    let mut client = hooks(server.addr).await;
    let request = pb::CreateWebhookEndpointRequest {
        request_id: "k-1".into(),
        url: "http://127.0.0.1:9/x".into(),
        event_types: vec![],
        description: String::new(),
    };
    let denied = client
        .create_webhook_endpoint(authed(request.clone(), WRITER))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let missing = client
        .list_webhook_endpoints(pb::ListWebhookEndpointsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let invalid = client
        .create_webhook_endpoint(authed(
            pb::CreateWebhookEndpointRequest {
                request_id: "bad key!".into(),
                url: "ftp://example.com".into(),
                event_types: vec!["order.deleted".into()],
                description: String::new(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(
        support::bad_fields(&invalid),
        vec!["event_types[0]", "request_id", "url"]
    );
    // Idempotent per request_id: the same endpoint and secret again; another request under
    // the same key is refused.
    let first = client
        .create_webhook_endpoint(authed(request.clone(), HOOK_ADMIN))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .create_webhook_endpoint(authed(request.clone(), HOOK_ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.endpoint.as_ref().unwrap().endpoint_id,
        again.endpoint.unwrap().endpoint_id
    );
    assert_eq!(first.secret, again.secret);
    let reused = client
        .create_webhook_endpoint(authed(
            pb::CreateWebhookEndpointRequest {
                description: "other".into(),
                ..request
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(support::reason(&reused), "IDEMPOTENCY_KEY_REUSED");
    let not_found = client
        .get_webhook_endpoint(authed(
            pb::GetWebhookEndpointRequest {
                endpoint_id: "we_nope".into(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);
    // Rotation: a new secret; list pages.
    let id = first.endpoint.unwrap().endpoint_id;
    let rotated = client
        .rotate_webhook_secret(authed(
            pb::RotateWebhookSecretRequest {
                endpoint_id: id.clone(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_") && rotated.secret != first.secret);
    create_endpoint(&mut client, "http://127.0.0.1:9/y", &["order.created"]).await;
    let page = client
        .list_webhook_endpoints(authed(
            pb::ListWebhookEndpointsRequest {
                page_size: 1,
                page_token: String::new(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.endpoints.len(), 1);
    assert_eq!(page.endpoints[0].endpoint_id, id);
    let rest = client
        .list_webhook_endpoints(authed(
            pb::ListWebhookEndpointsRequest {
                page_size: 1,
                page_token: page.next_page_token,
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.endpoints.len(), 1);
    assert_eq!(rest.endpoints[0].event_types, vec!["order.created"]);
    assert!(rest.next_page_token.is_empty());
    client
        .delete_webhook_endpoint(authed(
            pb::DeleteWebhookEndpointRequest {
                endpoint_id: id.clone(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap();
    let gone = client
        .get_webhook_endpoint(authed(
            pb::GetWebhookEndpointRequest { endpoint_id: id },
            HOOK_ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_event_again_with_the_same_id() {
    let server = TestServer::start_with(&[
        ALLOW_LOOPBACK[0],
        ALLOW_LOOPBACK[1],
        "--webhook-retry-schedule",
        "50ms,50ms,50ms,50ms",
    ])
    .await;
    let mut receiver = Receiver::start(&[
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(429),
    ])
    .await;
    let mut client = hooks(server.addr).await;
    let (created, _secret) = create_endpoint(&mut client, &receiver.url(), &[]).await;
    let mut orders = server.client().await;
    support::create(&mut orders, "c-1").await;
    let attempts = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    assert!(
        attempts
            .iter()
            .all(|a| a.id == attempts[0].id && a.body == attempts[0].body)
    );
    // The next request is the next event, not a fifth copy of the first.
    support::create(&mut orders, "c-2").await;
    let next = receiver.next().await;
    assert_ne!(next.id, attempts[0].id);
    assert_eq!(next.sequence(), attempts[0].sequence() + 1);
    let log = deliveries(&mut client, &created.endpoint_id).await;
    let first_event: Vec<_> = log
        .iter()
        .filter(|d| d.sequence == attempts[0].sequence())
        .collect();
    assert_eq!(first_event.len(), 4);
    assert_eq!(
        first_event
            .iter()
            .map(|d| d.http_status)
            .collect::<Vec<_>>(),
        vec![200, 429, 503, 500]
    );
    assert_eq!(
        first_event.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    assert!(first_event[1].next_attempt_time.is_some() && !first_event[1].delivered);
}

#[tokio::test]
async fn gone_disables_and_reenabling_delivers_what_was_missed_in_order() {
    let server = TestServer::start_with(&ALLOW_LOOPBACK).await;
    let mut receiver = Receiver::start(&[Answer::Status(410)]).await;
    let mut client = hooks(server.addr).await;
    let (created, _secret) = create_endpoint(&mut client, &receiver.url(), &[]).await;
    let mut orders = server.client().await;
    support::create(&mut orders, "c-1").await;
    let refused = receiver.next().await;
    let disabled = eventually(|| {
        let mut client = client.clone();
        let id = created.endpoint_id.clone();
        async move {
            let endpoint = endpoint(&mut client, &id).await;
            (!endpoint.enabled).then_some(endpoint)
        }
    })
    .await;
    assert!(
        disabled.disabled_reason.contains("410"),
        "{}",
        disabled.disabled_reason
    );
    // Events while disabled wait.
    support::create(&mut orders, "c-2").await;
    support::create(&mut orders, "c-3").await;
    let enabled = client
        .update_webhook_endpoint(authed(
            pb::UpdateWebhookEndpointRequest {
                endpoint_id: created.endpoint_id.clone(),
                enabled: Some(true),
                ..Default::default()
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(enabled.enabled && enabled.disabled_reason.is_empty());
    let again = receiver.next().await;
    assert_eq!(
        again.id, refused.id,
        "resumes from the cursor: the refused event first"
    );
    let second = receiver.next().await;
    let third = receiver.next().await;
    assert_eq!(second.sequence(), again.sequence() + 1);
    assert_eq!(third.sequence(), again.sequence() + 2);
}

#[tokio::test]
async fn replay_redelivers_from_a_retained_sequence_and_refuses_others() {
    let server = TestServer::start_with(&ALLOW_LOOPBACK).await;
    let mut receiver = Receiver::start(&[]).await;
    let mut client = hooks(server.addr).await;
    let (created, _secret) =
        create_endpoint(&mut client, &receiver.url(), &["order.created"]).await;
    let mut orders = server.client().await;
    let order = support::create(&mut orders, "c-1").await;
    // Not wanted by type: skipped, the cursor moves over it.
    support::set_status(&mut orders, &order.order_id, pb::OrderStatus::Paid)
        .await
        .unwrap();
    support::create(&mut orders, "c-2").await;
    let first = receiver.next().await;
    let second = receiver.next().await;
    assert_eq!(second.sequence(), first.sequence() + 2);
    let replayed = client
        .replay_webhook_events(authed(
            pb::ReplayWebhookEventsRequest {
                endpoint_id: created.endpoint_id.clone(),
                after_sequence: first.sequence() - 1,
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.delivered_through_sequence, first.sequence() - 1);
    let again = [receiver.next().await, receiver.next().await];
    assert_eq!(again[0].id, first.id);
    assert_eq!(again[1].id, second.id);
    let ahead = client
        .replay_webhook_events(authed(
            pb::ReplayWebhookEventsRequest {
                endpoint_id: created.endpoint_id.clone(),
                after_sequence: 1_000_000,
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(ahead.code(), Code::OutOfRange);
}

#[tokio::test]
async fn ordering_per_endpoint_holds_under_concurrent_writers() {
    let server = TestServer::start_with(&ALLOW_LOOPBACK).await;
    let mut receiver = Receiver::start(&[]).await;
    let mut client = hooks(server.addr).await;
    create_endpoint(&mut client, &receiver.url(), &[]).await;
    let mut writers = Vec::new();
    for writer in 0..4 {
        let mut orders = server.client().await;
        writers.push(tokio::spawn(async move {
            for n in 0..10 {
                support::create(&mut orders, &format!("c-{writer}-{n}")).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut last = 0;
    for _ in 0..40 {
        let received = receiver.next().await;
        assert!(
            received.sequence() > last,
            "{} after {last}",
            received.sequence()
        );
        last = received.sequence();
    }
}

#[tokio::test]
async fn internal_targets_are_refused_without_the_allowlist() {
    let server = TestServer::start().await;
    let mut receiver = Receiver::start(&[]).await;
    let mut client = hooks(server.addr).await;
    for url in [
        format!("http://{}/", receiver.addr),
        "https://127.0.0.1/".to_owned(),
        "https://10.0.0.1/".to_owned(),
        "https://[::1]/".to_owned(),
        "https://169.254.169.254/latest".to_owned(),
        "https://[::ffff:127.0.0.1]/".to_owned(),
    ] {
        let refused = client
            .create_webhook_endpoint(authed(
                pb::CreateWebhookEndpointRequest {
                    url: url.clone(),
                    ..Default::default()
                },
                HOOK_ADMIN,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}");
    }
    // A name is only resolved when connecting: `localhost` resolves to 127.0.0.1 and is refused
    // there, before any byte is sent.
    let (created, _secret) = create_endpoint(
        &mut client,
        &format!("https://localhost:{}/", receiver.addr.port()),
        &[],
    )
    .await;
    let mut orders = server.client().await;
    support::create(&mut orders, "c-1").await;
    let attempt = eventually(|| {
        let mut client = client.clone();
        let id = created.endpoint_id.clone();
        async move { deliveries(&mut client, &id).await.pop() }
    })
    .await;
    assert!(!attempt.delivered);
    assert!(
        attempt.error.contains("refused") && attempt.error.contains("loopback"),
        "{}",
        attempt.error
    );
    assert!(
        receiver.got.try_recv().is_err(),
        "nothing reached the receiver"
    );
}

#[tokio::test]
async fn a_hanging_receiver_is_cut_at_the_attempt_timeout() {
    let server = TestServer::start_with(&[
        ALLOW_LOOPBACK[0],
        ALLOW_LOOPBACK[1],
        "--webhook-attempt-timeout",
        "300ms",
        "--webhook-retry-schedule",
        "10ms",
    ])
    .await;
    let mut receiver = Receiver::start(&[Answer::Hang]).await;
    let mut client = hooks(server.addr).await;
    let (created, _secret) = create_endpoint(&mut client, &receiver.url(), &[]).await;
    let mut orders = server.client().await;
    support::create(&mut orders, "c-1").await;
    let hung = receiver.next().await;
    let retried = receiver.next().await;
    assert_eq!(retried.id, hung.id);
    let log = eventually(|| {
        let mut client = client.clone();
        let id = created.endpoint_id.clone();
        async move {
            let log = deliveries(&mut client, &id).await;
            (log.len() == 2).then_some(log)
        }
    })
    .await;
    assert!(log[0].delivered);
    assert!(log[1].error.contains("attempt timeout"), "{}", log[1].error);
    let latency = log[1].latency.unwrap();
    assert!(
        latency.seconds == 0 && latency.nanos >= 300_000_000,
        "{latency:?}"
    );
}

#[tokio::test]
async fn killing_the_service_mid_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [ALLOW_LOOPBACK[0], ALLOW_LOOPBACK[1]];
    let mut process = ServerProcess::start_with(dir.path(), "127.0.0.1:0", &flags);
    let mut receiver = Receiver::start(&[Answer::Hang]).await;
    let mut client = hooks(process.addr).await;
    let (created, _secret) = create_endpoint(&mut client, &receiver.url(), &[]).await;
    let mut orders = support::client(process.addr).await;
    support::create(&mut orders, "c-1").await;
    // The request is at the receiver, unanswered: kill -9 now.
    let in_flight = receiver.next().await;
    process.kill_hard();
    let restarted = ServerProcess::start_with(dir.path(), "127.0.0.1:0", &flags);
    let again = receiver.next().await;
    assert_eq!(again.id, in_flight.id);
    assert_eq!(again.body, in_flight.body);
    let mut client = hooks(restarted.addr).await;
    let sequence = in_flight.sequence();
    eventually(|| {
        let mut client = client.clone();
        let id = created.endpoint_id.clone();
        async move {
            (endpoint(&mut client, &id).await.delivered_through_sequence == sequence).then_some(())
        }
    })
    .await;
    let _ = &mut client;
}

#[tokio::test]
async fn two_replicas_on_postgresql_deliver_each_event_once_in_order() {
    let database = crate::postgres::TestDatabase::create().await;
    let flags = [
        ALLOW_LOOPBACK[0],
        ALLOW_LOOPBACK[1],
        "--webhook-lease",
        "2s",
    ];
    let first = TestServer::start_on_database(&database.url(), &flags).await;
    let second = TestServer::start_on_database(&database.url(), &flags).await;
    let mut receiver = Receiver::start(&[]).await;
    let mut client = hooks(first.addr).await;
    let (created, _secret) = create_endpoint(&mut client, &receiver.url(), &[]).await;
    let mut writers = Vec::new();
    for server in [&first, &second] {
        let mut orders = server.client().await;
        writers.push(tokio::spawn(async move {
            for n in 0..10 {
                support::create(&mut orders, &format!("c-{n}")).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut last = 0;
    for _ in 0..20 {
        let received = receiver.next().await;
        assert!(
            received.sequence() > last,
            "{} after {last}",
            received.sequence()
        );
        last = received.sequence();
    }
    // Once each: the next request is the next event, no copy of an earlier one.
    let mut orders = second.client().await;
    support::create(&mut orders, "c-last").await;
    let next = receiver.next().await;
    assert_eq!(next.sequence(), last + 1);
    // The receiver has the last request before the replica has recorded its answer.
    let log = eventually(|| {
        let mut client = client.clone();
        let id = created.endpoint_id.clone();
        async move {
            let log = deliveries(&mut client, &id).await;
            (log.len() >= 21 && log.iter().all(|d| d.delivered)).then_some(log)
        }
    })
    .await;
    assert_eq!(log.len(), 21);
    assert!(log.iter().all(|d| d.attempt == 1));
    // The replica that stops lets the other take its endpoints over once the lease expires.
    first.stop().await;
    support::create(&mut orders, "c-after").await;
    assert_eq!(receiver.next().await.sequence(), last + 2);
    second.stop().await;
    database.remove().await;
}

#[tokio::test]
async fn attempts_latency_and_lag_are_on_metrics() {
    let server = TestServer::start_with(&[
        ALLOW_LOOPBACK[0],
        ALLOW_LOOPBACK[1],
        "--metrics-addr",
        "127.0.0.1:0",
        "--webhook-retry-schedule",
        "10ms",
    ])
    .await;
    let mut receiver = Receiver::start(&[Answer::Status(502)]).await;
    let mut client = hooks(server.addr).await;
    let (created, _secret) = create_endpoint(&mut client, &receiver.url(), &[]).await;
    let mut orders = server.client().await;
    support::create(&mut orders, "c-1").await;
    receiver.next().await;
    receiver.next().await;
    let metrics = server.metrics_addr.unwrap();
    let scrape = eventually(|| async move {
        let scrape = crate::metrics::scrape(metrics).await;
        let delivered = crate::metrics::value(
            &scrape,
            "orders_webhook_attempts_total",
            &[("outcome", "delivered")],
        );
        (delivered >= 1.0).then_some(scrape)
    })
    .await;
    let value = |name, labels: &[(&str, &str)]| crate::metrics::value(&scrape, name, labels);
    assert_eq!(
        value(
            "orders_webhook_attempts_total",
            &[("outcome", "http_error")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "orders_webhook_delivery_duration_seconds",
            &[("outcome", "delivered")]
        ),
        1.0
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "orders_webhook_lag"
                && s.labels.get("endpoint") == Some(created.endpoint_id.as_str())),
        "no lag gauge for the endpoint"
    );
}

#[tokio::test]
async fn each_event_keeps_the_trace_context_of_its_write() {
    let dir = tempfile::tempdir().unwrap();
    let process = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let mut orders = support::client(process.addr).await;
    let mut request = authed(support::new_order("c-1", "traced-1"), WRITER);
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    orders.create_order(request).await.unwrap();
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("orders.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let stored: Option<String> = db
        .query_row(
            "SELECT trace_parent FROM order_events ORDER BY sequence DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let stored = stored.expect("the event has a traceparent");
    // The write's own span, in the caller's trace.
    assert!(
        stored.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{stored}"
    );
    assert!(
        !stored.contains("00f067aa0ba902b7"),
        "{stored}: the server span, not the caller's"
    );
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_both_sign_after_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("webhook-secrets.key");
    std::fs::write(&key, hex::encode([42u8; 32])).unwrap();
    let key = key.display().to_string();
    let server = TestServer::start_in(
        dir,
        &[
            ALLOW_LOOPBACK[0],
            ALLOW_LOOPBACK[1],
            "--webhook-secrets-key-file",
            &key,
        ],
    )
    .await;
    let mut receiver = Receiver::start(&[]).await;
    let mut client = hooks(server.addr).await;
    let (created, old_secret) = create_endpoint(&mut client, &receiver.url(), &[]).await;
    let new_secret = client
        .rotate_webhook_secret(authed(
            pb::RotateWebhookSecretRequest {
                endpoint_id: created.endpoint_id.clone(),
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let db = rusqlite::Connection::open_with_flags(
        server.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (secret, previous): (String, String) = db
        .query_row(
            "SELECT secret, previous_secret FROM webhook_endpoints",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    for stored in [&secret, &previous] {
        assert!(stored.starts_with("aes256gcm:"), "{stored}");
        assert!(!stored.contains(&old_secret[6..]) && !stored.contains(&new_secret[6..]));
    }
    let mut orders = server.client().await;
    support::create(&mut orders, "c-1").await;
    let received = receiver.next().await;
    let signatures: Vec<&str> = received.signature.split(' ').collect();
    assert_eq!(signatures.len(), 2, "{}", received.signature);
    for secret in [&new_secret, &old_secret] {
        let expected = independent_signature(secret, &received);
        assert!(
            signatures.contains(&expected.as_str()),
            "{secret} did not sign"
        );
    }
}
