//! Webhooks across the real binaries: a real order-service delivers to `status-client webhooks
//! listen` (its own process, port 0), with the endpoint managed by the `status-client webhooks`
//! commands: events arrive verified and in order on the receiver's stdout, the delivery log and
//! the secret rotation work through the CLI, and the receiver refuses a stale delivery.

use std::time::Duration;

use order_status_tests::order_service_process::{OrderServiceProcess, WRITER_TOKEN};
use order_status_tests::status_client_process::StatusClientCli;
use serde_json::Value;
use sha2::{Digest, Sha256};
use status_client::webhooks::{Secret, sign, unix_now};
use tokio::io::{BufReader, Lines};
use tokio::process::ChildStdout;

const WEBHOOKS_TOKEN: &str = "webhooks-admin-token-for-tests";

/// How long one expected receiver line may take (retries every 200 ms meanwhile).
const LINE_WITHIN: Duration = Duration::from_secs(30);

async fn start_order_service() -> OrderServiceProcess {
    let tokens = format!(
        "[[token]]\nprincipal = \"test-webhooks\"\nscopes = [\"webhooks.admin\"]\nsha256 = \"{}\"\n",
        hex::encode(Sha256::digest(WEBHOOKS_TOKEN.as_bytes()))
    );
    OrderServiceProcess::start_with_tokens_and_env(
        &tokens,
        &[
            ("ORDER_SERVICE_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
            (
                "ORDER_SERVICE_WEBHOOK_RETRY_SCHEDULE",
                "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
            ),
        ],
    )
    .await
    .unwrap()
}

/// The receiver's next stdout line as JSON.
async fn next_event(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(LINE_WITHIN, lines.next_line())
        .await
        .expect("no delivery printed in time")
        .unwrap()
        .expect("the receiver's stdout ended");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}

fn run_ok(output: &order_status_tests::status_client_process::CliOutput) -> Value {
    output.assert_ok();
    serde_json::from_str(output.stdout.trim()).unwrap()
}

#[tokio::test]
async fn deliveries_reach_the_listening_receiver_verified_and_in_order() {
    let server = start_order_service().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let admin = StatusClientCli::new(server.url(), Some(WEBHOOKS_TOKEN));
    let writer = StatusClientCli::new(server.url(), Some(WRITER_TOKEN));

    // The receiver starts before its endpoint exists, its secret file not yet written.
    let (mut receiver, mut lines) = admin
        .spawn(&[
            "webhooks",
            "listen",
            "--addr",
            "127.0.0.1:0",
            "--secret-file",
            secrets.to_str().unwrap(),
        ])
        .unwrap();
    let first = tokio::time::timeout(LINE_WITHIN, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = first
        .strip_prefix("status-client listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();

    let created = run_ok(
        &admin
            .run(&[
                "--output",
                "json",
                "webhooks",
                "create",
                "--url",
                &format!("http://{addr}/hooks"),
                "--description",
                "cli test",
            ])
            .await
            .unwrap(),
    );
    let endpoint = created["endpoint"]["endpointId"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret: Secret = created["secret"].as_str().unwrap().parse().unwrap();
    std::fs::write(&secrets, format!("{secret}\n")).unwrap();

    // An order and its payment: created, then status_changed, verified (else not printed).
    let order = writer.create_order("webhook-cli").await;
    let order_id = order["orderId"].as_str().unwrap();
    writer
        .run(&["update", order_id, "paid"])
        .await
        .unwrap()
        .assert_ok();
    let created_event = next_event(&mut lines).await;
    let paid_event = next_event(&mut lines).await;
    assert_eq!(created_event["type"], "order.created");
    assert_eq!(created_event["data"]["order"]["orderId"], order_id);
    assert_eq!(paid_event["type"], "order.status_changed");
    assert_eq!(paid_event["data"]["order"]["status"], "ORDER_STATUS_PAID");
    assert_eq!(paid_event["data"]["previousStatus"], "ORDER_STATUS_PENDING");
    let sequence = |event: &Value| {
        event["data"]["sequence"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(sequence(&paid_event) > sequence(&created_event));
    assert_ne!(created_event["webhookId"], paid_event["webhookId"]);

    // The delivery log: both acknowledged, with the receiver's 204.
    let log = admin
        .run(&["--output", "json", "webhooks", "deliveries", &endpoint])
        .await
        .unwrap();
    log.assert_ok();
    let attempts = log.json_lines().unwrap();
    for event in [&created_event, &paid_event] {
        assert!(
            attempts.iter().any(|a| a["webhookId"] == event["webhookId"]
                && a["delivered"] == true
                && a["httpStatus"] == 204),
            "{attempts:?}"
        );
    }

    // Rotation: the receiver knows only the old secret; order-service signs with both during
    // the grace period, so the next event still verifies there.
    let rotated = run_ok(
        &admin
            .run(&["--output", "json", "webhooks", "rotate-secret", &endpoint])
            .await
            .unwrap(),
    );
    let new_secret: Secret = rotated["secret"].as_str().unwrap().parse().unwrap();
    assert_ne!(new_secret, secret);
    writer
        .run(&["update", order_id, "shipped"])
        .await
        .unwrap()
        .assert_ok();
    let shipped_event = next_event(&mut lines).await;
    assert_eq!(
        shipped_event["data"]["order"]["status"],
        "ORDER_STATUS_SHIPPED"
    );
    assert!(sequence(&shipped_event) > sequence(&paid_event));

    // The endpoint as the CLI shows it: enabled, delivered through the last sequence, no secret.
    let shown = admin.run(&["webhooks", "get", &endpoint]).await.unwrap();
    shown.assert_ok();
    assert!(
        shown.stdout.contains("state       enabled"),
        "{}",
        shown.stdout
    );
    assert!(!shown.stdout.contains("whsec_"), "{}", shown.stdout);

    // A captured delivery sent again ten minutes later is refused as stale, with the reason.
    let body = br#"{"type":"order.created","data":{}}"#;
    let old = unix_now() - 600;
    let (status, answer) = post(
        &addr,
        &[
            ("webhook-id", "evt_replayed".to_owned()),
            ("webhook-timestamp", old.to_string()),
            (
                "webhook-signature",
                sign(&[&secret], "evt_replayed", old, body),
            ),
        ],
        body,
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("is outside now"), "{answer}");

    receiver.start_kill().unwrap();
    let _ = receiver.wait().await;
}

/// One HTTP/1.1 POST; the status and body of the answer.
async fn post(addr: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST /hooks HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer.split_once("\r\n\r\n").unwrap().1.to_owned())
}
