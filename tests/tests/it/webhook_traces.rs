//! A webhook delivery in the traces: each attempt is a `webhook.deliver` span of order-service
//! linked to the span of the write that produced its event (the writer's traceparent is stored
//! with the event), so a trace backend leads from an order's creation to its webhook.

use crate::telemetry_support::{PATIENCE, as_pairs, describe, exporting_to};
use order_status_tests::order_service_process::{OrderServiceProcess, WRITER_TOKEN};
use order_status_tests::otlp_receiver::OtlpReceiver;
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use orders_proto::v1::webhook_service_client::WebhookServiceClient;
use sha2::{Digest, Sha256};

const HOOK_ADMIN: &str = "hook-admin-token-for-tests";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn a_delivery_attempt_links_to_the_trace_of_the_write() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut env = exporting_to(&receiver.endpoint());
    env.push(("ORDER_SERVICE_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8".into()));
    env.push(("ORDER_SERVICE_WEBHOOK_RETRY_SCHEDULE", "1h".into()));
    let admin = format!(
        "[[token]]\nprincipal = \"hook-admin\"\nscopes = [\"webhooks.admin\"]\nsha256 = \"{}\"\n",
        hex::encode(Sha256::digest(HOOK_ADMIN.as_bytes()))
    );
    let server = OrderServiceProcess::start_with_tokens_and_env(&admin, &as_pairs(&env))
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Nothing listens on port 1: the attempt fails, and is traced all the same.
    WebhookServiceClient::new(channel.clone())
        .create_webhook_endpoint(authed(
            pb::CreateWebhookEndpointRequest {
                request_id: "trace-hook".into(),
                url: "http://127.0.0.1:1/hook".into(),
                ..Default::default()
            },
            HOOK_ADMIN,
        ))
        .await
        .unwrap();
    let mut create = authed(
        pb::CreateOrderRequest {
            request_id: "traced-order".into(),
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            items: vec![pb::LineItem {
                sku: "A-1".into(),
                quantity: 1,
                unit_price_cents: 100,
            }],
        },
        WRITER_TOKEN,
    );
    create.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    OrderServiceClient::new(channel)
        .create_order(create)
        .await
        .unwrap();
    let found = receiver
        .wait_for_spans(PATIENCE, |spans| {
            spans.iter().any(|span| {
                span.name == "webhook.deliver"
                    && span.links.iter().any(|link| link.starts_with(TRACE_ID))
            })
        })
        .await;
    let spans = receiver.spans();
    assert!(
        found.is_ok(),
        "no linked webhook.deliver span:\n{}",
        describe(&spans)
    );
    let deliver = spans
        .iter()
        .find(|span| span.name == "webhook.deliver")
        .unwrap();
    assert_ne!(deliver.trace_id, TRACE_ID, "a trace of its own, linked");
    assert_eq!(deliver.attr_str("attempt"), Some("1"));
    assert!(
        deliver
            .attr_str("webhook_id")
            .is_some_and(|id| id.starts_with("evt_we_"))
    );
    assert_eq!(deliver.attr_str("outcome"), Some("network_error"));
    // The link names a span of the write's trace that order-service exported.
    let linked = deliver
        .links
        .iter()
        .find(|link| link.starts_with(TRACE_ID))
        .unwrap();
    let span_id = linked.rsplit('-').next().unwrap();
    receiver
        .wait_for_spans(PATIENCE, |spans| spans.iter().any(|s| s.span_id == span_id))
        .await
        .unwrap_or_else(|error| panic!("{error}: the linked span {span_id} was not exported"));
}
