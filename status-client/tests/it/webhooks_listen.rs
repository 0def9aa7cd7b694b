//! The webhook receiver (`webhooks listen`'s library half) on a real socket on port 0, sent real
//! HTTP/1.1 requests: signed deliveries are acknowledged and printed once, bad signatures and
//! stale timestamps are refused with 401 and a reason, rotation's two secrets both verify, and a
//! secret file is picked up when it appears.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use status_client::webhooks::listen::{ListenSettings, listen};
use status_client::webhooks::{Secret, sign, unix_now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// What the receiver printed, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// A running receiver; stops when dropped.
struct Receiver {
    addr: SocketAddr,
    printed: Captured,
    _stop: oneshot::Sender<()>,
}

async fn start(settings: ListenSettings) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let printed = Captured::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let out = printed.clone();
    tokio::spawn(async move {
        listen(listener, settings, out, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Receiver {
        addr,
        printed,
        _stop: stop,
    }
}

/// One HTTP/1.1 request on its own connection; the status and the body of the answer.
async fn request(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} /hooks/orders HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// A delivery of `body` as order-service sends it: id, timestamp, signature by `secrets`.
async fn deliver(
    addr: SocketAddr,
    secrets: &[&Secret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> (u16, String) {
    let headers = [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", sign(secrets, id, timestamp, body)),
    ];
    request(addr, "POST", &headers, body).await
}

fn event(sequence: u64) -> Vec<u8> {
    serde_json::json!({
        "type": "order.created",
        "timestamp": "2026-12-01T06:00:00Z",
        "data": {"sequence": sequence.to_string(), "order": {"orderId": "o-1", "status": "ORDER_STATUS_PENDING"}},
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_signed_delivery_is_acknowledged_and_printed_as_one_json_line() {
    let secret = Secret::generate();
    let receiver = start(ListenSettings::new(vec![secret.clone()])).await;
    let (status, _) = deliver(receiver.addr, &[&secret], "evt_1", unix_now(), &event(7)).await;
    assert_eq!(status, 204);
    let lines = receiver.printed.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["webhookId"], "evt_1");
    assert_eq!(lines[0]["type"], "order.created");
    assert_eq!(lines[0]["data"]["sequence"], "7");
    assert_eq!(lines[0]["data"]["order"]["orderId"], "o-1");
}

#[tokio::test]
async fn a_bad_signature_is_refused_with_401_and_the_reason() {
    let secret = Secret::generate();
    let receiver = start(ListenSettings::new(vec![secret.clone()])).await;
    let now = unix_now();
    // Signed with another secret.
    let (status, body) = deliver(
        receiver.addr,
        &[&Secret::generate()],
        "evt_2",
        now,
        &event(1),
    )
    .await;
    assert_eq!((status, body.as_str()), (401, "no v1 signature matches\n"));
    // Signed, then the body changed on the way.
    let signature = sign(&[&secret], "evt_2", now, &event(1));
    let headers = [
        ("webhook-id", "evt_2".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", signature),
    ];
    let (status, _) = request(receiver.addr, "POST", &headers, &event(2)).await;
    assert_eq!(status, 401);
    // The empty signature of a careless sender.
    let headers = [
        ("webhook-id", "evt_2".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", "v1,".to_owned()),
    ];
    let (status, _) = request(receiver.addr, "POST", &headers, &event(1)).await;
    assert_eq!(status, 401);
    // No signature at all.
    let (status, body) = request(receiver.addr, "POST", &headers[..2], &event(1)).await;
    assert_eq!(
        (status, body.as_str()),
        (401, "missing header webhook-signature\n")
    );
    assert!(receiver.printed.lines().is_empty());
}

#[tokio::test]
async fn a_stale_or_future_timestamp_is_refused_with_401() {
    let secret = Secret::generate();
    let receiver = start(ListenSettings::new(vec![secret.clone()])).await;
    let now = unix_now();
    // Correctly signed, but six minutes old: a replay of a captured delivery looks like this.
    let (status, body) = deliver(receiver.addr, &[&secret], "evt_3", now - 360, &event(1)).await;
    assert_eq!(status, 401);
    assert!(
        body.starts_with(&format!("timestamp {} is outside now", now - 360)),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1);
    let (status, _) = deliver(receiver.addr, &[&secret], "evt_3", now + 360, &event(1)).await;
    assert_eq!(status, 401);
    assert!(receiver.printed.lines().is_empty());
    // Within the tolerance it is fine.
    let (status, _) = deliver(receiver.addr, &[&secret], "evt_3", now - 200, &event(1)).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn a_repeated_webhook_id_is_acknowledged_but_printed_once() {
    let secret = Secret::generate();
    let receiver = start(ListenSettings::new(vec![secret.clone()])).await;
    let now = unix_now();
    assert_eq!(
        deliver(receiver.addr, &[&secret], "evt_4", now, &event(4))
            .await
            .0,
        204
    );
    // The sender's retry: same id, a later timestamp and so another signature.
    let (status, body) = deliver(receiver.addr, &[&secret], "evt_4", now + 5, &event(4)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "duplicate, already received\n")
    );
    assert_eq!(
        deliver(receiver.addr, &[&secret], "evt_5", now, &event(5))
            .await
            .0,
        204
    );
    let ids: Vec<_> = receiver
        .printed
        .lines()
        .iter()
        .map(|l| l["webhookId"].clone())
        .collect();
    assert_eq!(ids, ["evt_4", "evt_5"]);
}

#[tokio::test]
async fn only_the_most_recent_ids_are_remembered() {
    let secret = Secret::generate();
    let mut settings = ListenSettings::new(vec![secret.clone()]);
    settings.remember_ids = 2;
    let receiver = start(settings).await;
    let now = unix_now();
    for id in ["a", "b", "c", "a"] {
        assert!(
            deliver(receiver.addr, &[&secret], id, now, &event(1))
                .await
                .0
                < 300
        );
    }
    // "a" was forgotten when "c" came (capacity 2), so its repeat is printed again.
    let ids: Vec<_> = receiver
        .printed
        .lines()
        .iter()
        .map(|l| l["webhookId"].clone())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "a"]);
}

#[tokio::test]
async fn during_a_rotation_either_secret_verifies() {
    let old = Secret::generate();
    let new = Secret::generate();
    let receiver = start(ListenSettings::new(vec![new.clone(), old.clone()])).await;
    let now = unix_now();
    // order-service signs with both during the grace period, then with the new one alone.
    assert_eq!(
        deliver(receiver.addr, &[&new, &old], "evt_r1", now, &event(1))
            .await
            .0,
        204
    );
    assert_eq!(
        deliver(receiver.addr, &[&old], "evt_r2", now, &event(2))
            .await
            .0,
        204
    );
    assert_eq!(
        deliver(receiver.addr, &[&new], "evt_r3", now, &event(3))
            .await
            .0,
        204
    );
    assert_eq!(
        deliver(
            receiver.addr,
            &[&Secret::generate()],
            "evt_r4",
            now,
            &event(4)
        )
        .await
        .0,
        401
    );
    assert_eq!(receiver.printed.lines().len(), 3);

    // A receiver that knows only the old secret still accepts the doubly-signed delivery.
    let receiver = start(ListenSettings::new(vec![old.clone()])).await;
    assert_eq!(
        deliver(receiver.addr, &[&new, &old], "evt_r5", now, &event(5))
            .await
            .0,
        204
    );
    assert_eq!(
        deliver(receiver.addr, &[&new], "evt_r6", now, &event(6))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn a_secret_file_written_later_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets");
    let mut settings = ListenSettings::new(Vec::new());
    settings.secret_file = Some(path.clone());
    let receiver = start(settings).await;
    let secret = Secret::generate();
    let now = unix_now();
    assert_eq!(
        deliver(receiver.addr, &[&secret], "evt_f1", now, &event(1))
            .await
            .0,
        401
    );
    std::fs::write(&path, format!("# endpoint ep-1\n{secret}\n")).unwrap();
    // The file is checked every second: wait (bounded) for it to be read.
    let mut status = 0;
    for _ in 0..100 {
        status = deliver(receiver.addr, &[&secret], "evt_f1", unix_now(), &event(1))
            .await
            .0;
        if status != 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 204);
    // A malformed rewrite leaves the secrets as they were.
    std::fs::write(&path, "whsec_broken\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        deliver(receiver.addr, &[&secret], "evt_f2", unix_now(), &event(2))
            .await
            .0,
        204
    );
}

#[tokio::test]
async fn other_methods_bodies_that_are_not_json_and_big_bodies_are_refused() {
    let secret = Secret::generate();
    let mut settings = ListenSettings::new(vec![secret.clone()]);
    settings.max_body_bytes = 1000;
    let receiver = start(settings).await;
    assert_eq!(request(receiver.addr, "GET", &[], b"").await.0, 405);
    let (status, body) = deliver(receiver.addr, &[&secret], "evt_j", unix_now(), b"not json").await;
    assert_eq!(status, 400);
    assert!(body.starts_with("body is not JSON"), "{body}");
    assert_eq!(
        deliver(receiver.addr, &[&secret], "evt_j", unix_now(), b"[1]")
            .await
            .0,
        400
    );
    let big = vec![b' '; 2000];
    assert_eq!(
        deliver(receiver.addr, &[&secret], "evt_big", unix_now(), &big)
            .await
            .0,
        413
    );
    assert!(receiver.printed.lines().is_empty());
}
