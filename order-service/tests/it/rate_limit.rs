//! Per-principal rate limits from the tokens file, against a real server: a burst over the limit
//! is refused with RESOURCE_EXHAUSTED / RATE_LIMITED, RetryInfo and QuotaFailure, other
//! principals go on, the file-wide default applies, a bad limit stops the start, and refusals
//! are counted on `/metrics`.

use crate::metrics::{scrape, value};
use crate::support::*;

use orders_proto::reason as reasons;
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const LIMITED: &str = "limited-token-0123456789";
const NEIGHBOUR: &str = "neighbour-token-0123456789";
const DEFAULTED: &str = "defaulted-token-0123456789";
/// A second token of the principal `limited`: it draws on the same allowance.
const LIMITED_TOO: &str = "limited-second-token-0123456789";

/// A tokens file with a file-wide default of 2 calls per 100 s, a principal with its own limit
/// of 3 calls per 100 s (two tokens), a neighbour with 5, and one that takes the default. The
/// rates are so low that no refill happens during a test, however slow the machine.
fn tokens_file() -> String {
    let sha = |token: &str| hex::encode(Sha256::digest(token.as_bytes()));
    format!(
        "[default_rate_limit]\n\
         per_second = 0.01\n\
         burst = 2\n\n\
         [[token]]\nprincipal = \"limited\"\nscopes = [\"orders.read\", \"orders.write\"]\n\
         sha256 = \"{}\"\nrate_limit = {{ per_second = 0.01, burst = 3 }}\n\n\
         [[token]]\nprincipal = \"limited\"\nscopes = [\"orders.read\"]\n\
         sha256 = \"{}\"\nrate_limit = {{ per_second = 0.01, burst = 3 }}\n\n\
         [[token]]\nprincipal = \"neighbour\"\nscopes = [\"orders.read\"]\n\
         sha256 = \"{}\"\nrate_limit = {{ per_second = 0.01, burst = 5 }}\n\n\
         [[token]]\nprincipal = \"defaulted\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n",
        sha(LIMITED),
        sha(LIMITED_TOO),
        sha(NEIGHBOUR),
        sha(DEFAULTED),
    )
}

async fn get(client: &mut OrderServiceClient<Channel>, token: &str) -> Result<(), tonic::Status> {
    let request = pb::GetOrderRequest {
        order_id: "ord_missing".into(),
    };
    match client.get_order(authed(request, token)).await {
        // Allowed through the gate: the order does not exist.
        Err(status) if status.code() == Code::NotFound => Ok(()),
        Err(status) => Err(status),
        Ok(_) => panic!("ord_missing exists"),
    }
}

/// Asserts that `status` is a rate-limit refusal of `principal` with a limit of `burst` calls,
/// and returns the RetryInfo delay.
fn assert_rate_limited(status: &tonic::Status, principal: &str, burst: u32) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(status), reasons::RATE_LIMITED);
    let details = status.get_error_details();
    let delay = details
        .retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo delay in {status:?}"));
    // 3 calls in 100 s: the next one is allowed 100 s after the first.
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(100),
        "{delay:?}"
    );
    let violations = &details
        .quota_failure()
        .unwrap_or_else(|| panic!("no QuotaFailure in {status:?}"))
        .violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].subject, principal);
    assert!(
        violations[0].description.contains(&format!(
            "0.01 requests per second, bursts of up to {burst}"
        )),
        "{:?}",
        violations[0].description
    );
    delay
}

#[tokio::test]
async fn a_burst_over_the_limit_is_refused_while_other_principals_go_on() {
    let server = TestServer::start_with_tokens(&tokens_file(), &[]).await;
    let mut client = server.client().await;

    // The burst, shared by both tokens of the principal.
    get(&mut client, LIMITED).await.unwrap();
    get(&mut client, LIMITED_TOO).await.unwrap();
    get(&mut client, LIMITED).await.unwrap();
    for token in [LIMITED, LIMITED_TOO] {
        let refused = get(&mut client, token).await.unwrap_err();
        assert_rate_limited(&refused, "limited", 3);
    }
    // A write is refused the same way, before any work: no order is made.
    let refused = client
        .create_order(authed(new_order("c", "rate-limited-create"), LIMITED))
        .await
        .unwrap_err();
    assert_rate_limited(&refused, "limited", 3);

    // Meanwhile the neighbour has its whole allowance, even from concurrent calls.
    let calls = (0..5).map(|_| {
        let mut client = client.clone();
        async move { get(&mut client, NEIGHBOUR).await }
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_rate_limited(
        &get(&mut client, NEIGHBOUR).await.unwrap_err(),
        "neighbour",
        5,
    );
    // And health needs no token and has no limit.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for _ in 0..10 {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
    }
    let listed = client
        .list_orders(authed(pb::ListOrdersRequest::default(), "unknown-token"))
        .await
        .unwrap_err();
    assert_eq!(
        listed.code(),
        Code::Unauthenticated,
        "unknown tokens are refused before any limit"
    );
}

#[tokio::test]
async fn the_file_default_applies_to_entries_without_their_own_limit() {
    let server = TestServer::start_with_tokens(&tokens_file(), &[]).await;
    let mut client = server.client().await;
    get(&mut client, DEFAULTED).await.unwrap();
    get(&mut client, DEFAULTED).await.unwrap();
    let refused = get(&mut client, DEFAULTED).await.unwrap_err();
    assert_rate_limited(&refused, "defaulted", 2);
}

#[tokio::test]
async fn a_watch_is_refused_like_any_call_when_over_the_limit() {
    let server = TestServer::start_with_tokens(&tokens_file(), &[]).await;
    let mut client = server.client().await;
    for _ in 0..2 {
        get(&mut client, DEFAULTED).await.unwrap();
    }
    let refused = client
        .watch_orders(authed(pb::WatchOrdersRequest::default(), DEFAULTED))
        .await
        .unwrap_err();
    assert_rate_limited(&refused, "defaulted", 2);
}

#[tokio::test]
async fn refused_calls_are_counted_per_principal_on_metrics() {
    let server =
        TestServer::start_with_tokens(&tokens_file(), &["--metrics-addr", "127.0.0.1:0"]).await;
    let mut client = server.client().await;
    for _ in 0..2 {
        get(&mut client, DEFAULTED).await.unwrap();
    }
    for _ in 0..4 {
        get(&mut client, DEFAULTED).await.unwrap_err();
    }
    for _ in 0..3 {
        get(&mut client, LIMITED).await.unwrap();
    }
    get(&mut client, LIMITED).await.unwrap_err();

    let scraped = scrape(server.metrics_addr.unwrap()).await;
    let limited = |principal| {
        value(
            &scraped,
            "orders_rate_limited_calls_total",
            &[("principal", principal)],
        )
    };
    assert_eq!(limited("defaulted"), 4.0);
    assert_eq!(limited("limited"), 1.0);
    assert_eq!(limited("neighbour"), 0.0);
    // The refusals are calls like any other in the call metrics, with their code.
    let refused_calls = value(
        &scraped,
        "rpc_server_call_duration_seconds_count",
        &[("rpc_method", "GetOrder"), ("rpc_grpc_status_code", "8")],
    );
    assert_eq!(refused_calls, 5.0);
}

#[test]
fn a_bad_rate_limit_stops_the_start_with_the_entry_named() {
    let dir = tempfile::tempdir().unwrap();
    let sha = hex::encode(Sha256::digest(b"some-token"));
    for (file, named, problem) in [
        (
            format!(
                "[[token]]\nprincipal = \"billing\"\nscopes = [\"orders.read\"]\nsha256 = \"{sha}\"\n\
                 rate_limit = {{ per_second = 0, burst = 10 }}\n"
            ),
            "token 1 (billing)",
            "per_second must be a positive number",
        ),
        (
            format!(
                "[default_rate_limit]\nper_second = 10\nburst = 0\n\n\
                 [[token]]\nprincipal = \"billing\"\nscopes = [\"orders.read\"]\nsha256 = \"{sha}\"\n"
            ),
            "[default_rate_limit]",
            "burst must be a whole number",
        ),
    ] {
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(&tokens, file).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
            .args(["--addr", "127.0.0.1:0", "--tokens-file"])
            .arg(&tokens)
            .env_remove("ORDER_SERVICE_DEV")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
        assert!(
            !dir.path().join("orders.db").exists(),
            "nothing is created before the settings are valid"
        );
    }
}
