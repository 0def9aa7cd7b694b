//! `orders.v1.WebhookService` calls on [`Client`], with the same replicas, token, deadline,
//! retries and idempotency keys as the `OrderService` calls.

use futures::Stream;
use orders_proto::v1::webhook_service_client::WebhookServiceClient;
use orders_proto::v1::{
    CreateWebhookEndpointRequest, CreateWebhookEndpointResponse, DeleteWebhookEndpointRequest,
    GetWebhookEndpointRequest, ListWebhookDeliveriesRequest, ListWebhookDeliveriesResponse,
    ListWebhookEndpointsRequest, ListWebhookEndpointsResponse, ReplayWebhookEventsRequest,
    RotateWebhookSecretRequest, RotateWebhookSecretResponse, UpdateWebhookEndpointRequest,
    WebhookDelivery, WebhookEndpoint,
};

use crate::client::{CallOptions, Client, idempotency_key};
use crate::error::ClientError;
use crate::pages;

/// The gRPC service name, as it appears in span names and the `rpc.service` attribute.
const SERVICE: &str = orders_proto::WEBHOOK_SERVICE_NAME;

impl Client {
    /// Registers a webhook endpoint; the response holds its signing secret, shown this once.
    /// The `request_id` is chosen as for [`Client::create_order`] and reused on every retry,
    /// so a retry after a lost response registers nothing twice.
    pub async fn create_webhook_endpoint(
        &self,
        mut request: CreateWebhookEndpointRequest,
        options: CallOptions,
    ) -> Result<CreateWebhookEndpointResponse, ClientError> {
        request.request_id = idempotency_key(&options, &request.request_id);
        self.unary_on(
            SERVICE,
            "CreateWebhookEndpoint",
            request,
            &options,
            |channel, request| {
                Box::pin(async move {
                    WebhookServiceClient::new(channel)
                        .create_webhook_endpoint(request)
                        .await
                })
            },
        )
        .await
    }

    /// One webhook endpoint.
    pub async fn get_webhook_endpoint(
        &self,
        endpoint_id: &str,
        options: CallOptions,
    ) -> Result<WebhookEndpoint, ClientError> {
        let request = GetWebhookEndpointRequest {
            endpoint_id: endpoint_id.to_owned(),
        };
        self.unary_on(
            SERVICE,
            "GetWebhookEndpoint",
            request,
            &options,
            |channel, request| {
                Box::pin(async move {
                    WebhookServiceClient::new(channel)
                        .get_webhook_endpoint(request)
                        .await
                })
            },
        )
        .await
    }

    /// One page of webhook endpoints, oldest first.
    pub async fn list_webhook_endpoints(
        &self,
        request: ListWebhookEndpointsRequest,
        options: CallOptions,
    ) -> Result<ListWebhookEndpointsResponse, ClientError> {
        self.unary_on(
            SERVICE,
            "ListWebhookEndpoints",
            request,
            &options,
            |channel, request| {
                Box::pin(async move {
                    WebhookServiceClient::new(channel)
                        .list_webhook_endpoints(request)
                        .await
                })
            },
        )
        .await
    }

    /// Every webhook endpoint, fetching page after page as the stream is read (each page one
    /// call with its own deadline), from `request.page_token` on.
    pub fn list_all_webhook_endpoints(
        &self,
        request: ListWebhookEndpointsRequest,
        options: CallOptions,
    ) -> impl Stream<Item = Result<WebhookEndpoint, ClientError>> + Send + 'static {
        let client = self.clone();
        pages::every_item(request, move |request| {
            let client = client.clone();
            let options = options.clone();
            async move { client.list_webhook_endpoints(request, options).await }
        })
    }

    /// Changes a webhook endpoint (URL, enabled, event types, description; empty or unset
    /// fields stay as they are).
    pub async fn update_webhook_endpoint(
        &self,
        request: UpdateWebhookEndpointRequest,
        options: CallOptions,
    ) -> Result<WebhookEndpoint, ClientError> {
        self.unary_on(
            SERVICE,
            "UpdateWebhookEndpoint",
            request,
            &options,
            |channel, request| {
                Box::pin(async move {
                    WebhookServiceClient::new(channel)
                        .update_webhook_endpoint(request)
                        .await
                })
            },
        )
        .await
    }

    /// Removes a webhook endpoint and stops its deliveries.
    pub async fn delete_webhook_endpoint(
        &self,
        endpoint_id: &str,
        options: CallOptions,
    ) -> Result<(), ClientError> {
        let request = DeleteWebhookEndpointRequest {
            endpoint_id: endpoint_id.to_owned(),
        };
        self.unary_on(
            SERVICE,
            "DeleteWebhookEndpoint",
            request,
            &options,
            |channel, request| {
                Box::pin(async move {
                    WebhookServiceClient::new(channel)
                        .delete_webhook_endpoint(request)
                        .await
                })
            },
        )
        .await
        .map(|_empty| ())
    }

    /// A new signing secret for the endpoint (shown this once); the old one keeps signing
    /// beside it for the grace period. Sent at most once to a server (see
    /// [`CallOptions::at_most_once`]): a second rotation would retire the secret receivers
    /// still use, so after an ambiguous failure, look before rotating again.
    pub async fn rotate_webhook_secret(
        &self,
        endpoint_id: &str,
        options: CallOptions,
    ) -> Result<RotateWebhookSecretResponse, ClientError> {
        let request = RotateWebhookSecretRequest {
            endpoint_id: endpoint_id.to_owned(),
        };
        self.unary_on(
            SERVICE,
            "RotateWebhookSecret",
            request,
            &options.at_most_once(),
            |channel, request| {
                Box::pin(async move {
                    WebhookServiceClient::new(channel)
                        .rotate_webhook_secret(request)
                        .await
                })
            },
        )
        .await
    }

    /// One page of an endpoint's delivery log, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        request: ListWebhookDeliveriesRequest,
        options: CallOptions,
    ) -> Result<ListWebhookDeliveriesResponse, ClientError> {
        self.unary_on(
            SERVICE,
            "ListWebhookDeliveries",
            request,
            &options,
            |channel, request| {
                Box::pin(async move {
                    WebhookServiceClient::new(channel)
                        .list_webhook_deliveries(request)
                        .await
                })
            },
        )
        .await
    }

    /// An endpoint's whole delivery log, newest first, fetching page after page as the stream
    /// is read, from `request.page_token` on.
    pub fn list_all_webhook_deliveries(
        &self,
        request: ListWebhookDeliveriesRequest,
        options: CallOptions,
    ) -> impl Stream<Item = Result<WebhookDelivery, ClientError>> + Send + 'static {
        let client = self.clone();
        pages::every_item(request, move |request| {
            let client = client.clone();
            let options = options.clone();
            async move { client.list_webhook_deliveries(request, options).await }
        })
    }

    /// Restarts an endpoint's delivery after `after_sequence` (which must still be retained,
    /// else `OUT_OF_RANGE`): the events after it are delivered again, in order.
    pub async fn replay_webhook_events(
        &self,
        endpoint_id: &str,
        after_sequence: u64,
        options: CallOptions,
    ) -> Result<WebhookEndpoint, ClientError> {
        let request = ReplayWebhookEventsRequest {
            endpoint_id: endpoint_id.to_owned(),
            after_sequence,
        };
        self.unary_on(
            SERVICE,
            "ReplayWebhookEvents",
            request,
            &options,
            |channel, request| {
                Box::pin(async move {
                    WebhookServiceClient::new(channel)
                        .replay_webhook_events(request)
                        .await
                })
            },
        )
        .await
    }
}
