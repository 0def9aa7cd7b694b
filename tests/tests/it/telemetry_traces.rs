//! One request followed end to end across the real binaries, as an OpenTelemetry backend
//! would see it: a real OTLP/gRPC receiver collects the spans of `status-client` (CLI and
//! `serve`) and `order-service`, and the tests check that they form one trace with the
//! RPC semantic conventions, errors, retries, a continued incoming trace, log lines that
//! name their span, no export without an endpoint, and calls unharmed by a collector that is
//! down.

use crate::telemetry_support;

use std::time::{Duration, Instant};

use order_status_tests::order_service_process::{
    OrderServiceProcess, WRITER_TOKEN, unused_local_addr,
};
use order_status_tests::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use order_status_tests::status_client_process::{ServeProcess, StatusClientCli, http_request};
use telemetry_support::{
    PATIENCE, as_pairs, children_of, create_order, descends_from, describe, exporting_to,
    is_attempt, is_logical_call, is_server_call, sample, scrape, the, wait_for_trace, with_env,
};

const AUTHORIZATION: &str = "Bearer writer-token-for-tests";

/// A receiver, an order-service exporting to it, and a CLI exporting to it.
async fn traced_stack() -> (OtlpReceiver, OrderServiceProcess, StatusClientCli) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = exporting_to(&receiver.endpoint());
    let server = OrderServiceProcess::start_with_env(&as_pairs(&env))
        .await
        .unwrap();
    let cli = with_env(StatusClientCli::new(server.url(), Some(WRITER_TOKEN)), &env);
    (receiver, server, cli)
}

/// The root span of the CLI command `name` that ran last.
async fn cli_root_span(receiver: &OtlpReceiver, name: &str) -> ReceivedSpan {
    // The CLI flushes before it exits, so its spans are already there.
    let roots: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|span| span.service_name == "status-client" && span.name == name)
        .collect();
    let root = roots
        .last()
        .unwrap_or_else(|| {
            panic!(
                "no {name:?} span from status-client:\n{}",
                describe(&receiver.spans())
            )
        })
        .clone();
    assert!(root.is_root(), "{root:?}");
    root
}

/// The spans of trace `trace_id` once they reach from the client's outermost span (CLI
/// command or HTTP request) down to order-service's store work for `method`: the two
/// processes export on their own schedules, so this waits for both.
async fn trace_through_server(
    receiver: &OtlpReceiver,
    trace_id: &str,
    method: &str,
) -> Vec<ReceivedSpan> {
    wait_for_trace(receiver, trace_id, |trace| {
        let parent_of = |span: &ReceivedSpan| {
            trace
                .iter()
                .find(|candidate| candidate.span_id == span.parent_span_id)
                .cloned()
        };
        // server span → attempt → logical call → command or HTTP span, all received.
        let chain = trace
            .iter()
            .find(|span| is_server_call(span, method))
            .and_then(&parent_of)
            .and_then(|attempt| parent_of(&attempt))
            .and_then(|logical| parent_of(&logical));
        chain.is_some()
            && trace
                .iter()
                .any(|span| span.attributes.contains_key("db.operation.name"))
    })
    .await
}

/// Checks the status-client side of one logical call under `parent` and returns its attempt
/// spans (oldest first).
fn logical_call_with_attempts<'a>(
    trace: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    method: &str,
) -> (&'a ReceivedSpan, Vec<&'a ReceivedSpan>) {
    let logical = the(trace, "logical call span", |span| {
        is_logical_call(span, method) && span.parent_span_id == parent.span_id
    });
    assert_eq!(logical.attr_str("rpc.system"), Some("grpc"), "{logical:?}");
    assert_eq!(
        logical.attr_str("rpc.service"),
        Some("orders.v1.OrderService")
    );
    assert_eq!(logical.attr_str("rpc.method"), Some(method));
    let mut attempts: Vec<&ReceivedSpan> = children_of(trace, logical)
        .into_iter()
        .filter(|span| is_attempt(span, method))
        .collect();
    attempts.sort_by_key(|span| span.attr_i64("rpc.attempt"));
    assert_eq!(
        logical.attr_i64("rpc.attempts"),
        Some(attempts.len() as i64),
        "rpc.attempts counts the attempt spans beneath:\n{}",
        telemetry_support::describe(trace)
    );
    (logical, attempts)
}

/// Checks the order-service side: the server span is the child of `attempt`, carries the RPC
/// attributes, the principal and `code`, and has the store work beneath it.
fn server_side<'a>(
    trace: &'a [ReceivedSpan],
    attempt: &ReceivedSpan,
    method: &str,
    code: i64,
) -> &'a ReceivedSpan {
    let server = the(trace, "order-service server span", |span| {
        is_server_call(span, method)
    });
    assert_eq!(
        server.parent_span_id,
        attempt.span_id,
        "the server span's parent is the client's attempt span:\n{}",
        describe(trace)
    );
    assert_eq!(server.attr_str("rpc.system"), Some("grpc"), "{server:?}");
    assert_eq!(
        server.attr_str("rpc.service"),
        Some("orders.v1.OrderService")
    );
    assert_eq!(server.attr_str("rpc.method"), Some(method));
    assert_eq!(server.attr_i64("rpc.grpc.status_code"), Some(code));
    assert_eq!(server.attr_str("principal"), Some("test-writer"));
    assert!(
        trace.iter().any(|span| span.service_name == "order-service"
            && span.attributes.contains_key("db.operation.name")
            && descends_from(trace, span, server)),
        "a store span beneath the server span:\n{}",
        describe(trace)
    );
    server
}

/// No span attribute anywhere holds the bearer token.
fn assert_no_token(spans: &[ReceivedSpan]) {
    for span in spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.to_string().contains(WRITER_TOKEN),
                "{key} of {} holds the token",
                span.name
            );
        }
    }
}

#[tokio::test]
async fn a_cli_get_is_one_trace_from_the_command_to_the_store() {
    let (receiver, server, cli) = traced_stack().await;
    let id = create_order(&cli, "trace-1").await;

    let output = cli.run(&["get", &id]).await.unwrap();
    output.assert_ok();

    let root = cli_root_span(&receiver, "status-client get").await;
    let trace = trace_through_server(&receiver, &root.trace_id, "GetOrder").await;
    let (logical, attempts) = logical_call_with_attempts(&trace, &root, "GetOrder");
    assert_eq!(logical.status, "unset", "{logical:?}");
    assert_eq!(logical.attr_i64("rpc.grpc.status_code"), Some(0));
    assert_eq!(attempts.len(), 1, "{}", describe(&trace));
    let attempt = attempts[0];
    assert_eq!(attempt.attr_i64("rpc.attempt"), Some(1));
    assert_eq!(attempt.attr_i64("rpc.grpc.status_code"), Some(0));
    assert_eq!(attempt.attr_str("server.address"), Some("127.0.0.1"));
    assert_eq!(
        attempt.attr_i64("server.port"),
        Some(i64::from(server.addr().port()))
    );
    let server_span = server_side(&trace, attempt, "GetOrder", 0);
    assert_eq!(server_span.status, "unset");
    // Both services took part, in one trace.
    for service in ["status-client", "order-service"] {
        assert!(trace.iter().any(|span| span.service_name == service));
    }
    assert_no_token(&receiver.spans());
    assert_access_line(&server, server_span, "GetOrder", "OK").await;
}

/// order-service's log (JSON) has the access line of the call `server_span` records: method,
/// principal, code and latency, joined to the span by its ids, and no token anywhere. Log lines
/// are written out in batches (every 100 ms), so the span can reach the receiver before its line
/// reaches the file: wait for the line rather than read the log once.
async fn assert_access_line(
    server: &OrderServiceProcess,
    server_span: &ReceivedSpan,
    method: &str,
    code: &str,
) {
    let (log, line) = wait_for_log_line(
        || server.log(),
        &format!("access line for span {}", server_span.span_id),
        |line| {
            line["message"] == "call finished" && line["span_id"] == server_span.span_id.as_str()
        },
    )
    .await;
    assert!(
        !log.contains(WRITER_TOKEN),
        "the log holds the token:\n{log}"
    );
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(
        line["method"],
        format!("orders.v1.OrderService/{method}").as_str(),
        "{line}"
    );
    assert_eq!(line["code"], code, "{line}");
    assert!(
        line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    assert_eq!(line["trace_id"], server_span.trace_id.as_str(), "{line}");
    assert_eq!(line["span"]["principal"], "test-writer", "{line}");
}

#[tokio::test]
async fn an_http_call_through_serve_continues_the_callers_trace() {
    let (receiver, server, cli) = traced_stack().await;
    let id = create_order(&cli, "trace-2").await;
    let env = exporting_to(&receiver.endpoint());
    let serve = ServeProcess::start_with(with_env(StatusClientCli::new(server.url(), None), &env))
        .await
        .unwrap();

    // The caller's trace: the HTTP server span must continue it, not start a new one.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let path = format!("/v1/orders/{id}");
    let response = http_request(
        serve.addr(),
        "GET",
        &path,
        &[
            ("authorization", AUTHORIZATION),
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    let trace = trace_through_server(&receiver, trace_id, "GetOrder").await;
    let http = the(&trace, "HTTP server span", |span| {
        span.service_name == "status-client" && span.kind == "server"
    });
    assert_eq!(http.name, "GET /v1/orders/{id}");
    assert_eq!(
        http.parent_span_id, caller_span,
        "continued from the caller's span"
    );
    assert_eq!(http.attr_str("http.route"), Some("/v1/orders/{id}"));
    assert_eq!(http.attr_i64("http.response.status_code"), Some(200));
    let (_, attempts) = logical_call_with_attempts(&trace, http, "GetOrder");
    assert_eq!(attempts.len(), 1, "{}", describe(&trace));
    server_side(&trace, attempts[0], "GetOrder", 0);
    assert_no_token(&receiver.spans());

    // Without a traceparent, the request starts its own trace at the HTTP span.
    let response = http_request(
        serve.addr(),
        "GET",
        &path,
        &[("authorization", AUTHORIZATION)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    let http = receiver
        .wait_for_span(PATIENCE, |span| {
            span.service_name == "status-client"
                && span.kind == "server"
                && span.trace_id != trace_id
        })
        .await
        .unwrap();
    assert!(http.is_root(), "{http:?}");
    trace_through_server(&receiver, &http.trace_id, "GetOrder").await;
    serve.terminate().await.unwrap();
}

#[tokio::test]
async fn a_failed_call_marks_the_spans_of_both_sides_as_errors_with_the_code() {
    let (receiver, order_service, cli) = traced_stack().await;

    let output = cli.run(&["get", "no-such-order"]).await.unwrap();
    assert_eq!(output.status, Some(15), "NOT_FOUND: {}", output.stderr);

    let root = cli_root_span(&receiver, "status-client get").await;
    assert_eq!(root.status, "error", "{root:?}");
    let trace = wait_for_trace(&receiver, &root.trace_id, |trace| {
        trace.iter().any(|span| is_server_call(span, "GetOrder"))
    })
    .await;
    let (logical, attempts) = logical_call_with_attempts(&trace, &root, "GetOrder");
    // NOT_FOUND is final: one attempt.
    assert_eq!(attempts.len(), 1, "{}", describe(&trace));
    let server = the(&trace, "server span", |span| {
        is_server_call(span, "GetOrder")
    });
    assert_eq!(server.parent_span_id, attempts[0].span_id);
    for span in [logical, attempts[0], server] {
        assert_eq!(span.status, "error", "{span:?}");
        assert_eq!(span.attr_i64("rpc.grpc.status_code"), Some(5), "{span:?}");
        assert_eq!(span.attr_str("error.type"), Some("NOT_FOUND"), "{span:?}");
        assert!(
            span.status_message.contains("NOT_FOUND"),
            "status message of {} {}: {:?}",
            span.service_name,
            span.kind,
            span.status_message
        );
    }
    assert!(
        logical.events.iter().any(|event| event == "exception"),
        "the error is recorded as an exception event: {logical:?}"
    );
    // The access line of a call answered with an error at once (no response body) too.
    assert_access_line(&order_service, server, "GetOrder", "NOT_FOUND").await;
}

#[tokio::test]
async fn a_retry_shows_as_attempts_under_one_logical_call() {
    let (receiver, server, cli) = traced_stack().await;
    let id = create_order(&cli, "trace-3").await;
    // The first replica refuses connections: the first attempt fails with UNAVAILABLE and
    // the retry goes to the live one (picks start with the first replica).
    let dead = unused_local_addr().unwrap();
    let env = exporting_to(&receiver.endpoint());
    let two_replicas = with_env(
        StatusClientCli::new(
            format!("http://{dead},{}", server.url()),
            Some(WRITER_TOKEN),
        ),
        &env,
    );

    let output = two_replicas.run(&["get", &id]).await.unwrap();
    output.assert_ok();

    let root = cli_root_span(&receiver, "status-client get").await;
    let trace = trace_through_server(&receiver, &root.trace_id, "GetOrder").await;
    let (logical, attempts) = logical_call_with_attempts(&trace, &root, "GetOrder");
    assert_eq!(attempts.len(), 2, "{}", describe(&trace));
    assert_eq!(logical.attr_i64("rpc.attempts"), Some(2));
    assert_eq!(logical.status, "unset", "the call as a whole succeeded");

    let (first, second) = (attempts[0], attempts[1]);
    assert_eq!(first.attr_i64("rpc.attempt"), Some(1));
    assert_eq!(first.attr_i64("server.port"), Some(i64::from(dead.port())));
    assert_eq!(first.attr_i64("rpc.grpc.status_code"), Some(14));
    assert_eq!(first.status, "error");
    assert_eq!(second.attr_i64("rpc.attempt"), Some(2));
    assert_eq!(
        second.attr_i64("server.port"),
        Some(i64::from(server.addr().port()))
    );
    assert_eq!(second.attr_i64("rpc.grpc.status_code"), Some(0));
    assert!(second.start_time_unix_nano >= first.end_time_unix_nano);
    server_side(&trace, second, "GetOrder", 0);
}

/// The standard OTLP/gRPC port: an SDK that exported somewhere by default would go here.
const DEFAULT_OTLP_ADDR: &str = "127.0.0.1:4317";

#[tokio::test]
async fn nothing_is_exported_without_an_endpoint() {
    // A receiver where a default would send to, if that port is free; else anywhere.
    let receiver = match OtlpReceiver::start_on(DEFAULT_OTLP_ADDR.parse().unwrap(), None).await {
        Ok(receiver) => receiver,
        Err(_) => OtlpReceiver::start().await.unwrap(),
    };
    // Everything else the processes get is as in the other tests: only the endpoint is left
    // out (the helpers never pass on the runner's OTEL_EXPORTER_OTLP_* variables).
    let no_endpoint = [("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned())];
    let mut server = OrderServiceProcess::start_with_env(&as_pairs(&no_endpoint))
        .await
        .unwrap();
    let cli = with_env(
        StatusClientCli::new(server.url(), Some(WRITER_TOKEN)),
        &no_endpoint,
    );
    let id = create_order(&cli, "quiet-1").await;
    cli.run(&["get", &id]).await.unwrap().assert_ok();
    assert_eq!(cli.run(&["get", "missing"]).await.unwrap().status, Some(15));
    let serve = ServeProcess::start_with(with_env(
        StatusClientCli::new(server.url(), None),
        &no_endpoint,
    ))
    .await
    .unwrap();
    let response = http_request(
        serve.addr(),
        "GET",
        &format!("/v1/orders/{id}"),
        &[("authorization", AUTHORIZATION)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    // /metrics still works: it does not depend on an exporter.
    let metrics = scrape(serve.addr()).await;
    assert!(
        sample(
            &metrics,
            "rpc_client_call_duration_seconds",
            &[("rpc_method", "GetOrder")]
        ) >= 1.0
    );

    // Every process flushes what it has on the way out: after they have all exited, anything
    // they meant to send would have arrived.
    assert!(serve.terminate().await.unwrap().success());
    server.stop().await.unwrap();
    assert_eq!(receiver.trace_exports(), 0, "{:?}", receiver.spans());
    // Without an exporter (and with RUST_LOG=info, where the log filter is the whole
    // subscriber's), the access line still carries the call span's fields and trace ids.
    let log = server.log();
    let access = json_log_lines(&log)
        .into_iter()
        .find(|line| {
            line["message"] == "call finished"
                && line["method"] == "orders.v1.OrderService/GetOrder"
                && line["code"] == "OK"
        })
        .unwrap_or_else(|| panic!("no GetOrder access line in:\n{log}"));
    let span = &access["span"];
    assert_eq!(span["name"], "grpc.server", "{access}");
    assert_eq!(span["rpc.method"], "GetOrder", "{access}");
    assert_eq!(span["rpc.grpc.status_code"], 0, "{access}");
    assert!(span["principal"].is_string(), "{access}");
    assert!(access["latency_ms"].is_f64(), "{access}");
    let hex = |value: &serde_json::Value, len: usize| {
        value
            .as_str()
            .is_some_and(|text| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(
        hex(&access["trace_id"], 32) && hex(&access["span_id"], 16),
        "{access}"
    );
    assert_eq!(
        receiver.metric_exports(),
        0,
        "{:?}",
        receiver.metric_names()
    );
}

/// Runs `get` `times` times and returns how long the results took to be printed, added up;
/// every run must then exit 0 (a CLI exporting flushes after printing, so its exit may wait
/// for the exporter's own bounded retries; the result must not).
/// How long a `get` of `id` takes from start to exit (successful).
async fn timed_exits(cli: &StatusClientCli, id: &str) -> Duration {
    let started = Instant::now();
    let output = cli.run(&["get", id]).await.unwrap();
    let elapsed = started.elapsed();
    output.assert_ok();
    elapsed
}

async fn timed_gets(cli: &StatusClientCli, id: &str, times: usize) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..times {
        let started = Instant::now();
        let (mut child, mut lines) = cli.spawn(&["get", id, "--output", "json"]).unwrap();
        let printed = lines.next_line().await.unwrap();
        total += started.elapsed();
        assert!(printed.is_some_and(|line| line.contains(id)));
        let status = tokio::time::timeout(PATIENCE, child.wait())
            .await
            .expect("the CLI exits")
            .unwrap();
        assert!(status.success(), "{status}");
    }
    total
}

/// Sends `GET /v1/orders/{id}` `times` times and returns how long that took; every request
/// must succeed.
async fn timed_http_gets(serve: &ServeProcess, id: &str, times: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..times {
        let response = http_request(
            serve.addr(),
            "GET",
            &format!("/v1/orders/{id}"),
            &[("authorization", AUTHORIZATION)],
            None,
        )
        .await
        .unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
    }
    started.elapsed()
}

#[tokio::test]
async fn a_stopped_collector_neither_fails_nor_slows_calls() {
    // A collector that went away: its port now refuses connections.
    let receiver = OtlpReceiver::start().await.unwrap();
    let dead_collector = exporting_to(&receiver.endpoint());
    receiver.stop().await;

    let server = OrderServiceProcess::start_with_env(&as_pairs(&dead_collector))
        .await
        .unwrap();
    let plain_cli = StatusClientCli::new(server.url(), Some(WRITER_TOKEN));
    let exporting_cli = with_env(plain_cli.clone(), &dead_collector);
    let id = create_order(&plain_cli, "down-1").await;

    // The CLI: each run exports (and flushes at exit) to a collector that is not there.
    const RUNS: usize = 5;
    let without_endpoint = timed_gets(&plain_cli, &id, RUNS).await;
    let with_dead_collector = timed_gets(&exporting_cli, &id, RUNS).await;
    // A generous bound, not a benchmark: what it rules out is a call waiting for the
    // collector (a connection attempt or an export timeout per span).
    assert!(
        with_dead_collector < without_endpoint * 3 + Duration::from_secs(5),
        "CLI with a dead collector took {with_dead_collector:?} for {RUNS} runs, without an endpoint {without_endpoint:?}"
    );

    // Nor does it hold up the exit of a command that is done: the export at exit is tried
    // once, where OTLP's retries (3, with backoff) would add about 1.7 s.
    let exit_without_endpoint = timed_exits(&plain_cli, &id).await;
    let exit_with_dead_collector = timed_exits(&exporting_cli, &id).await;
    assert!(
        exit_with_dead_collector < exit_without_endpoint + Duration::from_secs(1),
        "a get exporting to a dead collector took {exit_with_dead_collector:?} to exit, without an endpoint {exit_without_endpoint:?}"
    );

    // serve: requests while its exporter keeps failing.
    let plain_serve = ServeProcess::start_with(StatusClientCli::new(server.url(), None))
        .await
        .unwrap();
    let exporting_serve = ServeProcess::start_with(with_env(
        StatusClientCli::new(server.url(), None),
        &dead_collector,
    ))
    .await
    .unwrap();
    const REQUESTS: usize = 30;
    let without_endpoint = timed_http_gets(&plain_serve, &id, REQUESTS).await;
    let with_dead_collector = timed_http_gets(&exporting_serve, &id, REQUESTS).await;
    assert!(
        with_dead_collector < without_endpoint * 3 + Duration::from_secs(5),
        "serve with a dead collector took {with_dead_collector:?} for {REQUESTS} requests, without an endpoint {without_endpoint:?}"
    );

    // The spans that could not be delivered are counted, not silently lost.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = scrape(exporting_serve.addr()).await;
        let dropped = sample(
            &metrics,
            "telemetry_spans_dropped_total",
            &[("reason", "export_failed")],
        );
        if dropped > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dropped spans counted after {PATIENCE:?}"
        );
        // The exporter fails on its own schedule (every 100 ms here): poll for its count.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And order-service, exporting to the same dead collector, kept answering throughout; it
    // still shuts down cleanly.
    assert!(plain_serve.terminate().await.unwrap().success());
    assert!(exporting_serve.terminate().await.unwrap().success());
    let mut server = server;
    server.stop().await.unwrap();
}

/// The JSON objects among `log`'s lines.
fn json_log_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The first JSON log line whose `message` is `message`.
fn log_line(log: &str, message: &str) -> serde_json::Value {
    json_log_lines(log)
        .into_iter()
        .find(|line| line["message"] == message)
        .unwrap_or_else(|| panic!("no log line {message:?} in:\n{log}"))
}

/// The first JSON line that `matches` in the log that `read` reads, and that log, waiting for
/// it: a running process writes its lines out in batches every 100 ms, on a timer of its own,
/// so a span of the same moment can reach the receiver before its line reaches the file.
async fn wait_for_log_line(
    read: impl Fn() -> String,
    what: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> (String, serde_json::Value) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = read();
        if let Some(line) = json_log_lines(&log).into_iter().find(|line| matches(line)) {
            return (log, line);
        }
        assert!(
            Instant::now() < deadline,
            "no {what} after {PATIENCE:?} in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn log_lines_made_in_a_span_carry_its_trace_and_span_ids() {
    let (receiver, server, cli) = traced_stack().await;
    let env = exporting_to(&receiver.endpoint());

    // status-client CLI: the retry's log line is made inside the logical call's span.
    let dead = unused_local_addr().unwrap();
    let verbose = with_env(
        StatusClientCli::new(
            format!("http://{dead},{}", server.url()),
            Some(WRITER_TOKEN),
        ),
        &env,
    )
    .env("RUST_LOG", "warn,status_client=debug")
    .env("LOG_FORMAT", "json");
    let create = [
        "create",
        "--customer",
        "logs-1",
        "--currency",
        "EUR",
        "--item",
        "BOOK:1:100",
        "--request-id",
        "logs-test-key-1",
    ];
    let output = verbose.run(&create).await.unwrap();
    output.assert_ok();
    let root = cli_root_span(&receiver, "status-client create").await;
    let trace = trace_through_server(&receiver, &root.trace_id, "CreateOrder").await;
    let (logical, _) = logical_call_with_attempts(&trace, &root, "CreateOrder");
    let retrying = log_line(&output.stderr, "retrying");
    assert_eq!(retrying["trace_id"], root.trace_id.as_str());
    assert_eq!(retrying["span_id"], logical.span_id.as_str());

    // order-service: the same create again is a replay, logged inside its call.
    cli.run(&create).await.unwrap().assert_ok();
    let root = cli_root_span(&receiver, "status-client create").await;
    let trace = trace_through_server(&receiver, &root.trace_id, "CreateOrder").await;
    let (_, replay) = wait_for_log_line(
        || server.log(),
        "replay line",
        |line| line["message"] == "idempotent replay of CreateOrder",
    )
    .await;
    assert_eq!(replay["trace_id"], root.trace_id.as_str());
    assert!(
        trace.iter().any(|span| span.service_name == "order-service"
            && replay["span_id"] == span.span_id.as_str()),
        "the replay line's span_id {} is an order-service span of the trace:\n{}",
        replay["span_id"],
        describe(&trace)
    );

    // serve: the access log line of a request is made inside the request's span.
    let log = tempfile::NamedTempFile::new().unwrap();
    let serve = ServeProcess::start_logging_to(
        with_env(StatusClientCli::new(server.url(), None), &env).env("LOG_FORMAT", "json"),
        log.reopen().unwrap(),
    )
    .await
    .unwrap();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let response = http_request(
        serve.addr(),
        "GET",
        "/v1/orders/missing",
        &[
            ("authorization", AUTHORIZATION),
            ("traceparent", &traceparent),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 404);
    let http = receiver
        .wait_for_span(PATIENCE, |span| {
            span.trace_id == trace_id
                && span.kind == "server"
                && span.service_name == "status-client"
        })
        .await
        .unwrap();
    let (_, access) = wait_for_log_line(
        || std::fs::read_to_string(log.path()).unwrap_or_default(),
        "request line",
        |line| line["message"] == "request",
    )
    .await;
    assert_eq!(access["trace_id"], trace_id);
    assert_eq!(access["span_id"], http.span_id.as_str());
    serve.terminate().await.unwrap();
}

#[tokio::test]
async fn a_watch_stays_one_trace_across_an_order_service_restart() {
    let (receiver, mut server, cli) = traced_stack().await;
    let id = create_order(&cli, "watch-1").await;
    let (mut watch, mut lines) = cli.spawn(&["watch", &id, "--output", "json"]).unwrap();
    let first = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some(), "the order's current state");

    // The stream breaks with the server; the watch re-opens it on the restarted server.
    server.stop().await.unwrap();
    server.restart().await.unwrap();
    cli.run(&["update", &id, "paid"]).await.unwrap().assert_ok();
    let paid = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(paid.is_some_and(|line| line.contains("ORDER_STATUS_PAID")));

    // Ctrl-C ends the watch; it flushes its spans on the way out.
    let pid = watch.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(PATIENCE, watch.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");

    let root = cli_root_span(&receiver, "status-client watch").await;
    // The re-opened stream replays the log after its cursor: that read is store work of the
    // WatchOrders call although it runs while the response body is polled.
    let trace = wait_for_trace(&receiver, &root.trace_id, |trace| {
        trace
            .iter()
            .filter(|span| is_server_call(span, "WatchOrders"))
            .count()
            >= 2
            && trace
                .iter()
                .any(|span| span.attr_str("db.operation.name") == Some("events_after"))
    })
    .await;
    for replay in trace
        .iter()
        .filter(|span| span.attr_str("db.operation.name") == Some("events_after"))
    {
        assert!(
            trace
                .iter()
                .any(|server| is_server_call(server, "WatchOrders")
                    && descends_from(&trace, replay, server)),
            "every replay read belongs to a WatchOrders call:\n{}",
            describe(&trace)
        );
    }
    // One logical call per stream opened, each under the command's span, each with the
    // order-service span of its stream beneath its attempt.
    let opens: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|span| is_logical_call(span, "WatchOrders"))
        .collect();
    assert!(opens.len() >= 2, "{}", describe(&trace));
    for open in &opens {
        assert_eq!(open.parent_span_id, root.span_id, "{}", describe(&trace));
    }
    for server_span in trace
        .iter()
        .filter(|span| is_server_call(span, "WatchOrders"))
    {
        let attempt = trace
            .iter()
            .find(|span| span.span_id == server_span.parent_span_id)
            .unwrap_or_else(|| panic!("the attempt of {server_span:?}"));
        assert!(is_attempt(attempt, "WatchOrders"), "{attempt:?}");
        assert!(
            opens
                .iter()
                .any(|open| open.span_id == attempt.parent_span_id),
            "{}",
            describe(&trace)
        );
    }
}
