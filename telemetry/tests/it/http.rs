//! The HTTP server layer (status-client's `serve`): an incoming `traceparent` is continued
//! through the HTTP span, the gRPC attempt made while handling it, and the gRPC server span.

use crate::common;

use std::convert::Infallible;
use std::time::Duration;

use common::{OtlpReceiver, TestServer, check, client, config, subscriber};
use order_status_telemetry::{HttpServerLayer, Telemetry};
use tower::{ServiceBuilder, ServiceExt};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn http_request_grpc_attempt_and_grpc_server_share_the_callers_trace() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = Telemetry::build(&config(Some(receiver.endpoint()))).unwrap();
    let _default = tracing::subscriber::set_default(subscriber(&telemetry));
    let grpc_server = TestServer::start(telemetry.metrics()).await;
    let grpc_client = client(grpc_server.uri(), telemetry.metrics());

    // A handler that calls the gRPC server, as `serve` calls order-service.
    let handler = tower::service_fn(move |request: http::Request<String>| {
        let mut grpc_client = grpc_client.clone();
        async move {
            let status = match request.uri().path() {
                "/health" => match grpc_client.check(check("")).await {
                    Ok(_) => http::StatusCode::OK,
                    Err(_) => http::StatusCode::BAD_GATEWAY,
                },
                _ => http::StatusCode::INTERNAL_SERVER_ERROR,
            };
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let service = ServiceBuilder::new()
        .layer(
            HttpServerLayer::new(telemetry.metrics().clone())
                .with_route(|_| Some("/health".to_owned())),
        )
        .service(handler);

    let request = http::Request::get("/health")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .body(String::new())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let failing = http::Request::get("/broken").body(String::new()).unwrap();
    let response = service.oneshot(failing).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    telemetry.force_flush().await.unwrap();

    let spans = receiver
        .wait_for_spans(Duration::from_secs(10), |spans| spans.len() >= 4)
        .await
        .unwrap();
    let http_span = spans
        .iter()
        .find(|span| span.trace_id == TRACE_ID && span.name == "GET /health")
        .expect("the HTTP server span continues the caller's trace");
    assert_eq!(http_span.kind, "server");
    assert_eq!(http_span.parent_span_id, CALLER_SPAN);
    assert_eq!(http_span.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(http_span.attr_str("http.request.method"), Some("GET"));
    let attempt = spans
        .iter()
        .find(|span| span.kind == "client")
        .expect("the gRPC attempt");
    assert_eq!(attempt.trace_id, TRACE_ID);
    assert_eq!(attempt.parent_span_id, http_span.span_id);
    let grpc_server = spans
        .iter()
        .find(|span| span.kind == "server" && span.name.ends_with("/Check"))
        .expect("the gRPC server span");
    assert_eq!(grpc_server.trace_id, TRACE_ID);
    assert_eq!(grpc_server.parent_span_id, attempt.span_id);

    let broken = spans
        .iter()
        .find(|span| span.attr_i64("http.response.status_code") == Some(500))
        .expect("the failing request's span");
    assert_eq!(broken.status, "error");
    assert!(broken.is_root(), "no traceparent came with it");

    let text = telemetry.exposition().render().unwrap();
    assert!(
        text.lines().any(
            |line| line.starts_with("http_server_request_duration_seconds_count{")
                && line.contains("http_response_status_code=\"200\"")
                && line.ends_with(" 1")
        ),
        "{text}"
    );
    telemetry.shutdown().await.unwrap();
}
