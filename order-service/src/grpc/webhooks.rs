//! The `orders.v1.WebhookService` handlers: validate (every violation reported at once, as a
//! `BadRequest`), call the webhook store, encode. Secrets leave the service in two answers only,
//! creation and rotation, and are never logged. Scope `webhooks.admin` is checked by the gate.

use super::context::principal;
use super::convert::timestamp;
use crate::domain::{self, Error, Fingerprint, RequestId, UnixMicros, Violations};
use crate::store::OrderStore;
use crate::store::webhooks::{
    CreateKey, DeliveryRow, EVENT_TYPES, EndpointRow, EndpointUpdate, NewEndpoint, WebhookStore,
};
use crate::webhooks::WebhookSettings;
use crate::webhooks::dispatcher::Dispatcher;
use crate::webhooks::network::check_url;
use order_status_webhooks::Secret;
use orders_proto::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long a rotated-out secret keeps signing.
const ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Longest description.
const MAX_DESCRIPTION: usize = 1024;

/// The webhook service's handlers.
pub struct WebhooksApi {
    hooks: Arc<dyn WebhookStore>,
    orders: Arc<dyn OrderStore>,
    settings: WebhookSettings,
    dispatcher: Arc<Dispatcher>,
}

impl WebhooksApi {
    /// Handlers over the stores; changes wake `dispatcher`.
    pub fn new(
        hooks: Arc<dyn WebhookStore>,
        orders: Arc<dyn OrderStore>,
        settings: WebhookSettings,
        dispatcher: Arc<Dispatcher>,
    ) -> Self {
        WebhooksApi {
            hooks,
            orders,
            settings,
            dispatcher,
        }
    }

    fn check_event_types(types: &[String], field: &str, violations: &mut Violations) {
        for (index, kind) in types.iter().enumerate() {
            if !EVENT_TYPES.contains(&kind.as_str()) {
                violations.add(
                    format!("{field}[{index}]"),
                    format!(
                        "unknown event type {kind:?}; known: {}",
                        EVENT_TYPES.join(", ")
                    ),
                );
            }
        }
    }

    fn check_description(description: &str, field: &str, violations: &mut Violations) {
        if description.chars().count() > MAX_DESCRIPTION {
            violations.add(
                field,
                format!("must have at most {MAX_DESCRIPTION} characters"),
            );
        }
    }

    fn endpoint_id(value: &str) -> Result<String, Error> {
        if value.is_empty() || value.len() > 64 {
            return Err(Error::invalid(
                "endpoint_id",
                "must be an endpoint id (1-64 characters)",
            ));
        }
        Ok(value.to_owned())
    }
}

fn dedup(types: Vec<String>) -> Vec<String> {
    let mut seen = Vec::with_capacity(types.len());
    for kind in types {
        if !seen.contains(&kind) {
            seen.push(kind);
        }
    }
    seen
}

/// The page size of a list request, checked and capped as for `ListOrders`.
fn checked_page_size(requested: i32) -> Result<usize, Error> {
    domain::page_size(requested)
        .map(|size| size as usize)
        .map_err(|why| Error::invalid("page_size", why))
}

/// The position a `page_token` of the listing `tag` carries (`None` for the first page).
fn position(tag: &str, token: &str) -> Result<Option<i64>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    domain::decode_page_token(token, tag)
        .map(Some)
        .map_err(|_| Error::invalid("page_token", "is not a page token this list issued"))
}

/// Cuts `rows` (read one past `size`) to the page, and the token of the next page, if any.
fn next_page<T>(rows: &mut Vec<T>, size: usize, tag: &str, position: impl Fn(&T) -> i64) -> String {
    if rows.len() <= size {
        return String::new();
    }
    rows.truncate(size);
    rows.last()
        .map(|row| domain::page_token(position(row), tag))
        .unwrap_or_default()
}

fn endpoint_message(row: EndpointRow) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        endpoint_id: row.id,
        url: row.url,
        enabled: row.enabled,
        event_types: row.event_types,
        description: row.description,
        disabled_reason: row.disabled_reason,
        delivered_through_sequence: row.cursor,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn delivery_message(row: DeliveryRow) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        webhook_id: row.webhook_id,
        sequence: row.sequence,
        attempt: row.attempt,
        attempt_time: Some(timestamp(row.attempt_time)),
        http_status: row.http_status,
        error: row.error,
        latency: Some(pbjson_types::Duration {
            seconds: row.latency.as_secs() as i64,
            nanos: row.latency.subsec_nanos() as i32,
        }),
        next_attempt_time: row.next_attempt.map(timestamp),
        delivered: row.delivered,
    }
}

#[tonic::async_trait]
impl pb::webhook_service_server::WebhookService for WebhooksApi {
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let request_id = if request.request_id.is_empty() {
            None
        } else {
            violations.check("request_id", RequestId::parse(&request.request_id))
        };
        violations.check(
            "url",
            check_url(&request.url, &self.settings.allowed_networks).map(drop),
        );
        Self::check_event_types(&request.event_types, "event_types", &mut violations);
        Self::check_description(&request.description, "description", &mut violations);
        violations.into_result(|| ())?;
        let event_types = dedup(request.event_types);
        let key = request_id.map(|request_id| CreateKey {
            principal,
            request_id,
            fingerprint: Fingerprint::of(&[
                b"CreateWebhookEndpoint",
                request.url.as_bytes(),
                event_types.join("\n").as_bytes(),
                request.description.as_bytes(),
            ]),
        });
        let id = format!("we_{}", uuid::Uuid::now_v7().simple());
        let secret = Secret::generate();
        let cursor = self.orders.log_bounds().await?.latest;
        let (row, replayed) = self
            .hooks
            .create_endpoint(
                key,
                NewEndpoint {
                    secret: self.settings.secrets.seal(&id, &secret),
                    id,
                    url: request.url,
                    event_types,
                    description: request.description,
                    cursor,
                    now: UnixMicros::now(),
                },
            )
            .await?;
        // A replay answers what the first call answered: the endpoint and its secret.
        let secret = if replayed {
            self.settings
                .secrets
                .open(&row.id, &row.secret)
                .map_err(Error::internal)?
        } else {
            tracing::info!(endpoint_id = %row.id, url = %row.url, "webhook endpoint created");
            secret
        };
        self.dispatcher.nudge();
        Ok(Response::new(pb::CreateWebhookEndpointResponse {
            endpoint: Some(endpoint_message(row)),
            secret: secret.to_string(),
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<pb::GetWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        let id = Self::endpoint_id(&request.get_ref().endpoint_id)?;
        Ok(Response::new(endpoint_message(
            self.hooks.endpoint(&id).await?,
        )))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let request = request.into_inner();
        let size = checked_page_size(request.page_size)?;
        let after = position("endpoints", &request.page_token)?.unwrap_or(0);
        let mut rows = self.hooks.endpoints(after, size + 1).await?;
        let next_page_token = next_page(&mut rows, size, "endpoints", |row| row.seq);
        Ok(Response::new(pb::ListWebhookEndpointsResponse {
            endpoints: rows.into_iter().map(endpoint_message).collect(),
            next_page_token,
        }))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<pb::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(
            "endpoint_id",
            Self::endpoint_id(&request.endpoint_id).map_err(|_| "must be an endpoint id".into()),
        );
        if !request.url.is_empty() {
            violations.check(
                "url",
                check_url(&request.url, &self.settings.allowed_networks).map(drop),
            );
        }
        Self::check_event_types(&request.event_types, "event_types", &mut violations);
        Self::check_description(&request.description, "description", &mut violations);
        violations.into_result(|| ())?;
        let id = id.expect("checked above");
        let update = EndpointUpdate {
            url: (!request.url.is_empty()).then_some(request.url),
            enabled: request.enabled,
            event_types: (!request.event_types.is_empty()).then(|| dedup(request.event_types)),
            description: (!request.description.is_empty()).then_some(request.description),
        };
        let row = self
            .hooks
            .update_endpoint(&id, update, UnixMicros::now())
            .await?;
        self.dispatcher.nudge();
        Ok(Response::new(endpoint_message(row)))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<()>, Status> {
        let id = Self::endpoint_id(&request.get_ref().endpoint_id)?;
        self.hooks.delete_endpoint(&id).await?;
        self.dispatcher.nudge();
        tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
        Ok(Response::new(()))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let id = Self::endpoint_id(&request.get_ref().endpoint_id)?;
        let secret = Secret::generate();
        let now = UnixMicros::now();
        let until = UnixMicros(now.0 + ROTATION_GRACE.as_micros() as i64);
        self.hooks
            .rotate_secret(&id, self.settings.secrets.seal(&id, &secret), until, now)
            .await?;
        tracing::info!(endpoint_id = %id, "webhook secret rotated; the previous one signs for 24 h");
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            secret: secret.to_string(),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let request = request.into_inner();
        let id = Self::endpoint_id(&request.endpoint_id)?;
        let size = checked_page_size(request.page_size)?;
        let before = position("deliveries", &request.page_token)?.unwrap_or(i64::MAX);
        let mut rows = self.hooks.deliveries(&id, before, size + 1).await?;
        let next_page_token = next_page(&mut rows, size, "deliveries", |row| row.id);
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: rows.into_iter().map(delivery_message).collect(),
            next_page_token,
        }))
    }

    async fn replay_webhook_events(
        &self,
        request: Request<pb::ReplayWebhookEventsRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        let request = request.into_inner();
        let id = Self::endpoint_id(&request.endpoint_id)?;
        // Exists? (NOT_FOUND before OUT_OF_RANGE.)
        self.hooks.endpoint(&id).await?;
        let bounds = self.orders.log_bounds().await?;
        let after = request.after_sequence;
        if after < bounds.complete_after {
            return Err(Error::EventsExpired {
                requested: after,
                oldest: bounds.complete_after + 1,
            }
            .into());
        }
        if after > bounds.latest {
            return Err(Error::SequenceAhead {
                requested: after,
                latest: bounds.latest,
            }
            .into());
        }
        let row = self.hooks.set_cursor(&id, after, UnixMicros::now()).await?;
        self.dispatcher.nudge();
        tracing::info!(endpoint_id = %id, after_sequence = after, "webhook replay requested");
        Ok(Response::new(endpoint_message(row)))
    }
}
