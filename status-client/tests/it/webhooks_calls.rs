//! The `WebhookService` calls of `Client` against a scripted server on a real socket: the same
//! retries and idempotency keys as the order calls, rotation never resent once received,
//! pages followed to the end, and the token sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use orders_proto::v1::webhook_service_server::{WebhookService, WebhookServiceServer};
use orders_proto::v1::{
    CreateWebhookEndpointRequest, CreateWebhookEndpointResponse, DeleteWebhookEndpointRequest,
    GetWebhookEndpointRequest, ListWebhookDeliveriesRequest, ListWebhookDeliveriesResponse,
    ListWebhookEndpointsRequest, ListWebhookEndpointsResponse, ReplayWebhookEventsRequest,
    RotateWebhookSecretRequest, RotateWebhookSecretResponse, UpdateWebhookEndpointRequest,
    WebhookDelivery, WebhookEndpoint,
};
use status_client::retry::{RetryPolicy, ThrottleSettings};
use status_client::{CallOptions, Client, Settings};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};

/// What the scripted service answers and what it was sent.
#[derive(Default)]
struct Script {
    /// Answers to the next CreateWebhookEndpoint calls (then: success).
    create_failures: VecDeque<Status>,
    /// Answers to the next RotateWebhookSecret calls (then: success).
    rotate_failures: VecDeque<Status>,
    /// request_id of every CreateWebhookEndpoint attempt.
    create_ids: Vec<String>,
    /// How many RotateWebhookSecret attempts arrived.
    rotations: usize,
    /// page_token of every ListWebhookDeliveries call.
    delivery_pages: Vec<String>,
    /// The authorization header of every call.
    authorizations: Vec<String>,
    /// The last UpdateWebhookEndpoint request.
    update: Option<UpdateWebhookEndpointRequest>,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Script>>);

impl Scripted {
    fn record<T>(&self, request: &Request<T>) -> std::sync::MutexGuard<'_, Script> {
        let mut script = self.0.lock().unwrap();
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        script.authorizations.push(authorization);
        script
    }
}

fn endpoint(id: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        endpoint_id: id.to_owned(),
        url: "http://127.0.0.1:9/hook".to_owned(),
        enabled: true,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl WebhookService for Scripted {
    async fn create_webhook_endpoint(
        &self,
        request: Request<CreateWebhookEndpointRequest>,
    ) -> Result<Response<CreateWebhookEndpointResponse>, Status> {
        let mut script = self.record(&request);
        script.create_ids.push(request.get_ref().request_id.clone());
        if let Some(failure) = script.create_failures.pop_front() {
            return Err(failure);
        }
        Ok(Response::new(CreateWebhookEndpointResponse {
            endpoint: Some(endpoint("ep-1")),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<GetWebhookEndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        drop(self.record(&request));
        match request.get_ref().endpoint_id.as_str() {
            "ep-1" => Ok(Response::new(endpoint("ep-1"))),
            _ => Err(Status::not_found("no such endpoint")),
        }
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<ListWebhookEndpointsRequest>,
    ) -> Result<Response<ListWebhookEndpointsResponse>, Status> {
        drop(self.record(&request));
        Ok(Response::new(ListWebhookEndpointsResponse {
            endpoints: vec![endpoint("ep-1")],
            next_page_token: String::new(),
        }))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<UpdateWebhookEndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        let mut script = self.record(&request);
        let update = request.into_inner();
        let mut answer = endpoint(&update.endpoint_id);
        answer.enabled = update.enabled.unwrap_or(true);
        script.update = Some(update);
        Ok(Response::new(answer))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<DeleteWebhookEndpointRequest>,
    ) -> Result<Response<()>, Status> {
        drop(self.record(&request));
        Ok(Response::new(()))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        let mut script = self.record(&request);
        script.rotations += 1;
        if let Some(failure) = script.rotate_failures.pop_front() {
            return Err(failure);
        }
        Ok(Response::new(RotateWebhookSecretResponse {
            secret: "whsec_new".to_owned(),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        let mut script = self.record(&request);
        let token = request.get_ref().page_token.clone();
        script.delivery_pages.push(token.clone());
        // Three pages: attempts 3 and 2 of sequence 5, then attempt 1, then nothing more.
        let delivery = |attempt| WebhookDelivery {
            webhook_id: "evt_5".to_owned(),
            sequence: 5,
            attempt,
            ..Default::default()
        };
        let (deliveries, next) = match token.as_str() {
            "" => (vec![delivery(3), delivery(2)], "p2"),
            "p2" => (vec![delivery(1)], "p3"),
            _ => (vec![], ""),
        };
        Ok(Response::new(ListWebhookDeliveriesResponse {
            deliveries,
            next_page_token: next.to_owned(),
        }))
    }

    async fn replay_webhook_events(
        &self,
        request: Request<ReplayWebhookEventsRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        drop(self.record(&request));
        if request.get_ref().after_sequence > 100 {
            return Err(Status::out_of_range("not retained"));
        }
        Ok(Response::new(endpoint(&request.get_ref().endpoint_id)))
    }
}

async fn start(script: Scripted) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(WebhookServiceServer::new(script))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

fn client(addr: SocketAddr) -> Client {
    let settings = Settings::from_endpoint_list(&format!("http://{addr}"))
        .unwrap()
        .with_token("admin-token")
        .with_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            multiplier: 2.0,
        })
        .with_throttle(ThrottleSettings {
            max_tokens: 100.0,
            token_ratio: 1.0,
        });
    Client::new(settings).unwrap()
}

#[tokio::test]
async fn create_is_retried_with_one_generated_request_id() {
    let script = Scripted::default();
    script.0.lock().unwrap().create_failures = VecDeque::from([
        Status::unavailable("restarting"),
        Status::unavailable("again"),
    ]);
    let client = client(start(script.clone()).await);
    let created = client
        .create_webhook_endpoint(
            CreateWebhookEndpointRequest {
                url: "http://127.0.0.1:9/hook".into(),
                ..Default::default()
            },
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(created.secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let script = script.0.lock().unwrap();
    assert_eq!(script.create_ids.len(), 3);
    assert!(!script.create_ids[0].is_empty());
    assert!(
        script
            .create_ids
            .iter()
            .all(|id| *id == script.create_ids[0]),
        "{:?}",
        script.create_ids
    );
    assert!(
        script
            .authorizations
            .iter()
            .all(|a| a == "Bearer admin-token")
    );
}

#[tokio::test]
async fn a_given_request_id_is_sent_as_is() {
    let script = Scripted::default();
    let client = client(start(script.clone()).await);
    client
        .create_webhook_endpoint(
            CreateWebhookEndpointRequest {
                url: "http://127.0.0.1:9/hook".into(),
                ..Default::default()
            },
            CallOptions::new().request_id("hook-1"),
        )
        .await
        .unwrap();
    assert_eq!(script.0.lock().unwrap().create_ids, ["hook-1"]);
}

#[tokio::test]
async fn rotation_is_never_resent_once_a_server_received_it() {
    let script = Scripted::default();
    script.0.lock().unwrap().rotate_failures = VecDeque::from([Status::unavailable("reset")]);
    let client = client(start(script.clone()).await);
    let error = client
        .rotate_webhook_secret("ep-1", CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(script.0.lock().unwrap().rotations, 1);
    // The caller looks (here: simply tries again) and the next rotation goes through.
    let rotated = client
        .rotate_webhook_secret("ep-1", CallOptions::new())
        .await
        .unwrap();
    assert_eq!(rotated.secret, "whsec_new");
    assert_eq!(script.0.lock().unwrap().rotations, 2);
}

#[tokio::test]
async fn the_delivery_log_is_read_page_after_page() {
    let script = Scripted::default();
    let client = client(start(script.clone()).await);
    let attempts: Vec<u32> = client
        .list_all_webhook_deliveries(
            ListWebhookDeliveriesRequest {
                endpoint_id: "ep-1".into(),
                ..Default::default()
            },
            CallOptions::new(),
        )
        .map_ok(|delivery| delivery.attempt)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(attempts, [3, 2, 1]);
    assert_eq!(script.0.lock().unwrap().delivery_pages, ["", "p2", "p3"]);
}

#[tokio::test]
async fn the_other_calls_pass_their_fields_and_codes_through() {
    let script = Scripted::default();
    let client = client(start(script.clone()).await);
    assert_eq!(
        client
            .get_webhook_endpoint("ep-1", CallOptions::new())
            .await
            .unwrap()
            .endpoint_id,
        "ep-1"
    );
    let missing = client
        .get_webhook_endpoint("ep-2", CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let disabled = client
        .update_webhook_endpoint(
            UpdateWebhookEndpointRequest {
                endpoint_id: "ep-1".into(),
                enabled: Some(false),
                ..Default::default()
            },
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert!(!disabled.enabled);
    assert_eq!(
        script.0.lock().unwrap().update.as_ref().unwrap().enabled,
        Some(false)
    );
    client
        .delete_webhook_endpoint("ep-1", CallOptions::new())
        .await
        .unwrap();
    client
        .replay_webhook_events("ep-1", 7, CallOptions::new())
        .await
        .unwrap();
    let too_old = client
        .replay_webhook_events("ep-1", 1000, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(too_old.code(), Code::OutOfRange);
    let listed: Vec<_> = client
        .list_all_webhook_endpoints(ListWebhookEndpointsRequest::default(), CallOptions::new())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}
