//! Every `status-client` subcommand against a real order-service: output (text and proto3
//! JSON), exit status per gRPC code, errors on stderr, and `--help`.

use order_status_tests::order_service_process::{OrderServiceProcess, READER_TOKEN, WRITER_TOKEN};
use order_status_tests::status_client_process::StatusClientCli;
use serde_json::Value;

#[tokio::test]
async fn create_get_update_and_list_print_orders_and_exit_zero() {
    let server = OrderServiceProcess::start().await.unwrap();
    let cli = StatusClientCli::new(server.url(), Some(WRITER_TOKEN));

    // create, text output
    let output = cli
        .run(&[
            "create",
            "--customer",
            "cli-1",
            "--currency",
            "EUR",
            "--item",
            "BOOK:2:1250",
            "--item",
            "PEN:1:99",
        ])
        .await
        .unwrap();
    output.assert_ok();
    assert!(
        output.stdout.contains("status    PENDING (version 1)"),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("2 x BOOK @ 12.50"),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("total     25.99 EUR"),
        "{}",
        output.stdout
    );

    // create, JSON output: one object in the proto3 JSON mapping
    let order = cli.create_order("cli-1").await;
    let id = order["orderId"].as_str().unwrap().to_owned();
    assert_eq!(order["status"], "ORDER_STATUS_PENDING");
    assert_eq!(order["totalCents"], "2500");
    assert_eq!(order["version"], "1");
    assert_eq!(order["items"][0]["unitPriceCents"], "1250");

    // get
    let output = cli.run(&["get", &id, "--output", "json"]).await.unwrap();
    output.assert_ok();
    assert_eq!(output.json_lines().unwrap(), vec![order.clone()]);
    let output = cli.run(&["get", &id]).await.unwrap();
    output.assert_ok();
    assert!(
        output.stdout.contains(&format!("order     {id}")),
        "{}",
        output.stdout
    );

    // update: every spelling of the status, optimistic concurrency, reason
    let output = cli
        .run(&[
            "update",
            &id,
            "paid",
            "--expected-version",
            "1",
            "--reason",
            "card",
            "--output",
            "json",
        ])
        .await
        .unwrap();
    output.assert_ok();
    let paid = output.json_lines().unwrap().remove(0);
    assert_eq!(paid["status"], "ORDER_STATUS_PAID");
    assert_eq!(paid["version"], "2");
    let output = cli
        .run(&["update", &id, "ORDER_STATUS_SHIPPED"])
        .await
        .unwrap();
    output.assert_ok();
    assert!(
        output.stdout.contains("status    SHIPPED (version 3)"),
        "{}",
        output.stdout
    );

    // list: pages through everything (page size 1), filters by status
    for _ in 0..3 {
        cli.create_order("cli-1").await;
    }
    let output = cli
        .run(&[
            "list",
            "--customer",
            "cli-1",
            "--page-size",
            "1",
            "--output",
            "json",
        ])
        .await
        .unwrap();
    output.assert_ok();
    let listed = output.json_lines().unwrap();
    assert_eq!(listed.len(), 5, "{}", output.stdout);
    assert_eq!(listed[1]["orderId"], id.as_str(), "oldest first");
    let output = cli
        .run(&[
            "list",
            "--customer",
            "cli-1",
            "--status",
            "SHIPPED",
            "--output",
            "json",
        ])
        .await
        .unwrap();
    output.assert_ok();
    let shipped = output.json_lines().unwrap();
    assert_eq!(shipped.len(), 1);
    assert_eq!(shipped[0]["orderId"], id.as_str());
    let output = cli.run(&["list", "--customer", "cli-1"]).await.unwrap();
    output.assert_ok();
    assert_eq!(
        output.stdout.lines().count(),
        6,
        "heading and five rows:\n{}",
        output.stdout
    );
    assert!(output.stdout.lines().next().unwrap().starts_with("ORDER"));
}

#[tokio::test]
async fn a_repeated_request_id_creates_one_order() {
    let server = OrderServiceProcess::start().await.unwrap();
    let cli = StatusClientCli::new(server.url(), Some(WRITER_TOKEN));
    let args = [
        "create",
        "--customer",
        "idem",
        "--currency",
        "EUR",
        "--item",
        "A:1:1",
        "--request-id",
        "cli-key-1",
        "--output",
        "json",
    ];
    let first = cli.run(&args).await.unwrap();
    let second = cli.run(&args).await.unwrap();
    first.assert_ok();
    second.assert_ok();
    assert_eq!(
        first.json_lines().unwrap()[0]["orderId"],
        second.json_lines().unwrap()[0]["orderId"]
    );
    let list = cli
        .run(&["list", "--customer", "idem", "--output", "json"])
        .await
        .unwrap();
    assert_eq!(list.json_lines().unwrap().len(), 1);

    // The same key with a different request is refused.
    let reused = cli
        .run(&[
            "create",
            "--customer",
            "idem",
            "--currency",
            "EUR",
            "--item",
            "B:1:1",
            "--request-id",
            "cli-key-1",
        ])
        .await
        .unwrap();
    assert_eq!(reused.status, Some(13), "{}", reused.stderr);
    assert!(
        reused.stderr.contains("IDEMPOTENCY_KEY_REUSED"),
        "{}",
        reused.stderr
    );
}

#[tokio::test]
async fn failures_print_the_code_on_stderr_and_exit_with_a_status_per_code() {
    let server = OrderServiceProcess::start().await.unwrap();
    let cli = StatusClientCli::new(server.url(), Some(WRITER_TOKEN));

    let missing = cli.run(&["get", "no-such-order"]).await.unwrap();
    assert_eq!(missing.status, Some(15), "{}", missing.stderr);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);
    assert!(missing.stdout.is_empty());

    let invalid = cli
        .run(&[
            "create",
            "--customer",
            "c",
            "--currency",
            "euro",
            "--item",
            "A:0:1",
        ])
        .await
        .unwrap();
    assert_eq!(invalid.status, Some(13), "{}", invalid.stderr);
    assert!(
        invalid.stderr.contains("INVALID_ARGUMENT"),
        "{}",
        invalid.stderr
    );
    assert!(
        invalid.stderr.contains("items[0].quantity"),
        "{}",
        invalid.stderr
    );
    assert!(invalid.stderr.contains("currency"), "{}", invalid.stderr);

    let order = cli.create_order("errors").await;
    let id = order["orderId"].as_str().unwrap();
    let transition = cli.run(&["update", id, "delivered"]).await.unwrap();
    assert_eq!(transition.status, Some(19), "{}", transition.stderr);
    assert!(
        transition.stderr.contains("FAILED_PRECONDITION"),
        "{}",
        transition.stderr
    );
    assert!(
        transition.stderr.contains("INVALID_TRANSITION"),
        "{}",
        transition.stderr
    );

    let stale = cli
        .run(&["update", id, "paid", "--expected-version", "7"])
        .await
        .unwrap();
    assert_eq!(stale.status, Some(20), "{}", stale.stderr);
    assert!(
        stale.stderr.contains("VERSION_MISMATCH"),
        "{}",
        stale.stderr
    );

    let anonymous = StatusClientCli::new(server.url(), None)
        .run(&["get", id])
        .await
        .unwrap();
    assert_eq!(anonymous.status, Some(26), "{}", anonymous.stderr);
    assert!(
        anonymous.stderr.contains("UNAUTHENTICATED"),
        "{}",
        anonymous.stderr
    );

    let reader = StatusClientCli::new(server.url(), Some(READER_TOKEN));
    let denied = reader.run(&["update", id, "paid"]).await.unwrap();
    assert_eq!(denied.status, Some(17), "{}", denied.stderr);
    assert!(
        denied.stderr.contains("PERMISSION_DENIED"),
        "{}",
        denied.stderr
    );
    reader.run(&["get", id]).await.unwrap().assert_ok();
}

#[tokio::test]
async fn an_unreachable_server_ends_the_call_at_its_deadline_and_bad_usage_exits_two() {
    // A port that was just bound and released: nothing listens there.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let cli = StatusClientCli::new(url, Some(WRITER_TOKEN)).timeout("1s");
    let down = cli.run(&["get", "x"]).await.unwrap();
    // Tried until the deadline (no server was reached, so nothing was processed): exit 14,
    // DEADLINE_EXCEEDED, with the connection error as the last error.
    assert_eq!(down.status, Some(14), "{}", down.stderr);
    assert!(down.stderr.contains("DEADLINE_EXCEEDED"), "{}", down.stderr);
    assert!(down.stderr.contains("UNAVAILABLE"), "{}", down.stderr);

    let usage = cli.run(&["update", "x", "lost"]).await.unwrap();
    assert_eq!(usage.status, Some(2), "{}", usage.stderr);
    assert!(
        usage.stderr.contains("unknown order status"),
        "{}",
        usage.stderr
    );
    let bad_timeout = cli.run(&["get", "x", "--timeout", "soon"]).await.unwrap();
    assert_eq!(bad_timeout.status, Some(2), "{}", bad_timeout.stderr);
    let no_watch = cli.run(&["watch"]).await.unwrap();
    assert_eq!(no_watch.status, Some(14), "{}", no_watch.stderr);
    let bad_endpoint = StatusClientCli::new("localhost:50051", None)
        .run(&["get", "x"])
        .await
        .unwrap();
    assert_eq!(bad_endpoint.status, Some(2), "{}", bad_endpoint.stderr);
}

#[tokio::test]
async fn every_subcommand_has_help() {
    let cli = StatusClientCli::new("http://127.0.0.1:1", None);
    for subcommand in ["get", "list", "create", "update", "watch", "serve"] {
        let output = cli.run(&[subcommand, "--help"]).await.unwrap();
        output.assert_ok();
        assert!(
            output.stdout.contains("Usage: status-client"),
            "{subcommand}: {}",
            output.stdout
        );
        assert!(
            output.stdout.contains("--endpoint"),
            "{subcommand}: {}",
            output.stdout
        );
    }
    let output = cli.run(&["--help"]).await.unwrap();
    output.assert_ok();
    assert!(output.stdout.contains("Exit status"), "{}", output.stdout);
}

#[tokio::test]
async fn watch_prints_each_event_as_it_happens() {
    let server = OrderServiceProcess::start().await.unwrap();
    let cli = StatusClientCli::new(server.url(), Some(WRITER_TOKEN));
    let order = cli.create_order("watched").await;
    let id = order["orderId"].as_str().unwrap().to_owned();

    let (mut watch, mut lines) = cli.spawn(&["watch", &id, "--output", "json"]).unwrap();
    let first: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(first["order"]["orderId"], id.as_str());
    assert_eq!(first["order"]["status"], "ORDER_STATUS_PENDING");

    cli.run(&["update", &id, "paid"]).await.unwrap().assert_ok();
    let second: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(second["order"]["status"], "ORDER_STATUS_PAID");
    assert_eq!(second["previousStatus"], "ORDER_STATUS_PENDING");
    let (s1, s2) = (seq(&first), seq(&second));
    assert!(s2 > s1);
    watch.kill().await.unwrap();

    // Text output, replaying from a sequence.
    let (mut watch, mut lines) = cli.spawn(&["watch", "--after", &s1.to_string()]).unwrap();
    let line = lines.next_line().await.unwrap().unwrap();
    assert!(line.starts_with(&format!("#{s2} ")), "{line}");
    assert!(line.contains("PENDING -> PAID"), "{line}");
    watch.kill().await.unwrap();

    // A watch the server refuses ends with its code.
    let missing = cli.run(&["watch", "no-such-order"]).await.unwrap();
    assert_eq!(missing.status, Some(15), "{}", missing.stderr);
}

fn seq(event: &Value) -> u64 {
    event["sequence"].as_str().unwrap().parse().unwrap()
}
