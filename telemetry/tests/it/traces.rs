//! Spans from a real tonic client and server reach a real OTLP/gRPC receiver with the RPC
//! semantic-convention attributes and the right parent/child links.

use crate::common;

use std::time::Duration;

use common::{
    OtlpReceiver, PRINCIPAL, ReceivedSpan, TestServer, check, client, config, subscriber,
};
use order_status_telemetry::Telemetry;
use order_status_telemetry::grpc::{
    AttemptNumber, GrpcServerLayer, finish_logical_call, logical_call_span,
};
use tracing::Instrument;

const WAIT: Duration = Duration::from_secs(10);

fn find<'a>(spans: &'a [ReceivedSpan], kind: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.kind == kind && span.name == name)
        .collect()
}

#[tokio::test]
async fn client_and_server_spans_share_one_trace_with_rpc_attributes() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let server = TestServer::start(telemetry.metrics()).await;
    let mut client = client(server.uri(), telemetry.metrics());

    let logical = logical_call_span("grpc.health.v1.Health", "Check");
    let outcome = async { client.check(check("")).await.map(|_| ()) }
        .instrument(logical.clone())
        .await;
    finish_logical_call(
        &logical,
        1,
        outcome
            .as_ref()
            .map(|_| ())
            .map_err(|status| (status.code(), status.message())),
    );
    outcome.unwrap();
    drop(logical);
    telemetry.force_flush().await.unwrap();

    let spans = receiver
        .wait_for_spans(WAIT, |spans| spans.len() >= 3)
        .await
        .unwrap();
    let name = "grpc.health.v1.Health/Check";
    let [server_span] = find(&spans, "server", name)[..] else {
        panic!("one server span expected: {spans:#?}")
    };
    let clients = find(&spans, "client", name);
    let attempt = clients
        .iter()
        .find(|span| span.attributes.contains_key("server.port"))
        .expect("an attempt span");
    let logical = clients
        .iter()
        .find(|span| span.attributes.contains_key("rpc.attempts"))
        .expect("a logical call span");

    assert_eq!(server_span.trace_id, attempt.trace_id);
    assert_eq!(logical.trace_id, attempt.trace_id);
    assert_eq!(
        server_span.parent_span_id, attempt.span_id,
        "server span's parent is the attempt"
    );
    assert_eq!(
        attempt.parent_span_id, logical.span_id,
        "the attempt nests under the logical call"
    );
    assert!(logical.is_root());

    for span in [server_span, *attempt, *logical] {
        assert_eq!(span.attr_str("rpc.system"), Some("grpc"));
        assert_eq!(span.attr_str("rpc.service"), Some("grpc.health.v1.Health"));
        assert_eq!(span.attr_str("rpc.method"), Some("Check"));
        assert_eq!(span.attr_i64("rpc.grpc.status_code"), Some(0));
        assert_eq!(span.status, "unset");
        assert_eq!(span.service_name, "telemetry-test");
    }
    assert_eq!(server_span.attr_str("server.address"), Some("127.0.0.1"));
    assert_eq!(attempt.attr_str("server.address"), Some("127.0.0.1"));
    assert_eq!(
        attempt.attr_i64("server.port"),
        Some(i64::from(server.addr.port()))
    );
    assert_eq!(server_span.attr_str("principal"), Some(PRINCIPAL));
    assert_eq!(logical.attr_i64("rpc.attempts"), Some(1));
    telemetry.shutdown().await.unwrap();
}

#[tokio::test]
async fn incoming_traceparent_is_continued() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let server = TestServer::start(telemetry.metrics()).await;
    // A plain client, as another team's service would be: only the header carries the trace.
    let channel = tonic::transport::Channel::builder(server.uri()).connect_lazy();
    let mut plain = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut request = check("");
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    plain.check(request).await.unwrap();
    telemetry.force_flush().await.unwrap();

    let span = receiver
        .wait_for_span(WAIT, |span| span.kind == "server")
        .await
        .unwrap();
    assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.parent_span_id, "00f067aa0ba902b7");
    telemetry.shutdown().await.unwrap();
}

#[tokio::test]
async fn failed_calls_mark_spans_as_errors_with_the_grpc_code() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let server = TestServer::start(telemetry.metrics()).await;
    let mut client = client(server.uri(), telemetry.metrics());

    let status = client.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    // A server that is not there: the attempt fails in the channel, before any response.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut unreachable = common::client(
        format!("http://{closed}").parse().unwrap(),
        telemetry.metrics(),
    );
    let status = unreachable.check(check("")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    telemetry.force_flush().await.unwrap();

    let spans = receiver
        .wait_for_spans(WAIT, |spans| spans.len() >= 3)
        .await
        .unwrap();
    let not_found: Vec<_> = spans
        .iter()
        .filter(|span| span.attr_i64("rpc.grpc.status_code") == Some(5))
        .collect();
    assert_eq!(not_found.len(), 2, "client and server span: {spans:#?}");
    for span in not_found {
        assert_eq!(span.status, "error");
        assert!(
            span.status_message.starts_with("NOT_FOUND"),
            "{}",
            span.status_message
        );
        assert_eq!(span.attr_str("error.type"), Some("NOT_FOUND"));
        assert!(span.events.iter().any(|event| event == "exception"));
    }
    let unavailable = spans
        .iter()
        .find(|span| span.attr_i64("rpc.grpc.status_code") == Some(14))
        .expect("the unreachable attempt");
    assert_eq!(unavailable.kind, "client");
    assert_eq!(unavailable.status, "error");
    assert_eq!(unavailable.attr_str("error.type"), Some("UNAVAILABLE"));
    telemetry.shutdown().await.unwrap();
}

#[tokio::test]
async fn retry_attempts_show_beneath_one_logical_call() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let server = TestServer::start(telemetry.metrics()).await;
    let mut client = client(server.uri(), telemetry.metrics());

    // A retry loop as status-client runs one: the first attempt fails, the second succeeds.
    let logical = logical_call_span("grpc.health.v1.Health", "Check");
    let attempts = async {
        for (attempt, service) in [(1, "not.yet.Serving"), (2, "")] {
            let mut request = check(service);
            request.extensions_mut().insert(AttemptNumber(attempt));
            if client.check(request).await.is_ok() {
                return attempt;
            }
            telemetry
                .metrics()
                .record_retry("Check", tonic::Code::NotFound);
        }
        panic!("the second attempt should succeed")
    }
    .instrument(logical.clone())
    .await;
    finish_logical_call(&logical, attempts, Ok(()));
    drop(logical);
    telemetry.force_flush().await.unwrap();

    let spans = receiver
        .wait_for_spans(WAIT, |spans| spans.len() >= 5)
        .await
        .unwrap();
    let logical = spans
        .iter()
        .find(|span| span.attributes.contains_key("rpc.attempts"))
        .expect("the logical call span");
    assert_eq!(logical.attr_i64("rpc.attempts"), Some(2));
    assert_eq!(logical.attr_i64("rpc.grpc.status_code"), Some(0));
    let mut attempts: Vec<_> = spans
        .iter()
        .filter(|span| span.attributes.contains_key("rpc.attempt"))
        .collect();
    attempts.sort_by_key(|span| span.attr_i64("rpc.attempt"));
    assert_eq!(attempts.len(), 2);
    for (number, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.parent_span_id, logical.span_id);
        assert_eq!(attempt.attr_i64("rpc.attempt"), Some(number as i64 + 1));
    }
    assert_eq!(attempts[0].status, "error");
    assert_eq!(attempts[1].status, "unset");
    // Each attempt has its own server span beneath it.
    for attempt in attempts {
        assert!(
            spans
                .iter()
                .any(|span| span.kind == "server" && span.parent_span_id == attempt.span_id),
            "no server span under attempt {attempt:?}"
        );
    }
    telemetry.shutdown().await.unwrap();
}

#[tokio::test]
async fn services_without_spans_are_still_measured() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let layer = GrpcServerLayer::new(telemetry.metrics().clone())
        .without_spans_for(["grpc.health.v1.Health"]);
    let server = TestServer::start_with(layer).await;
    let channel = tonic::transport::Channel::builder(server.uri()).connect_lazy();
    let mut plain = tonic_health::pb::health_client::HealthClient::new(channel);
    plain.check(check("")).await.unwrap();
    // A traced span after it, so an export is known to have happened.
    tracing::info_span!(target: "order_service", "after.health").in_scope(|| {});
    telemetry.force_flush().await.unwrap();

    let spans = receiver
        .wait_for_spans(WAIT, |spans| {
            spans.iter().any(|span| span.name == "after.health")
        })
        .await
        .unwrap();
    assert!(
        spans.iter().all(|span| span.kind != "server"),
        "no server span for Health: {spans:#?}"
    );
    let text = telemetry.exposition().render().unwrap();
    assert!(
        text.lines().any(
            |line| line.starts_with("rpc_server_call_duration_seconds_count{")
                && line.contains("rpc_method=\"Check\"")
                && line.ends_with(" 1")
        ),
        "{text}"
    );
    telemetry.shutdown().await.unwrap();
}
