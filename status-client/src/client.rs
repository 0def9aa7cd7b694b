//! `Client`: the one type an internal service embeds to call order-service safely. Every call
//! gets an overall deadline (sent as `grpc-timeout`, the remaining budget on each attempt),
//! retries with backoff under a shared throttle, and an idempotency key reused on every retry.
//! Each logical call is one client span (`orders.v1.OrderService/GetOrder`, with
//! `rpc.attempts`), with every attempt's span beneath it, and retries are counted in metrics.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use order_status_telemetry::Metrics;
use order_status_telemetry::grpc::{AttemptNumber, finish_logical_call, logical_call_span};
use orders_proto::v1::order_service_client::OrderServiceClient;
use orders_proto::v1::{
    CreateOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order,
    UpdateOrderStatusRequest, WatchOrdersRequest,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::auth::AuthInterceptor;
use crate::channel::{Pick, ReplicaService, Replicas};
use crate::error::{ClientError, readable};
use crate::idempotency::new_request_id;
use crate::pages;
use crate::retry::{RetryPolicy, RetryThrottle, is_rate_limited, is_retryable};
use crate::settings::{Settings, SettingsError};
use crate::watch::OrderEventStream;

/// The gRPC service name, as it appears in span names and the `rpc.service` attribute.
pub(crate) const SERVICE: &str = "orders.v1.OrderService";

/// One replica's channel with the bearer-token interceptor: what every generated client
/// (`OrderService`, `WebhookService`) of one attempt is built on.
pub(crate) type AuthedChannel = InterceptedService<ReplicaService, AuthInterceptor>;

/// The generated client over one replica's channel, with the bearer-token interceptor.
pub(crate) type OrderServiceGrpc = OrderServiceClient<AuthedChannel>;

/// One attempt of a unary call, as the retry loop sends it: the response or the attempt's status.
pub(crate) type AttemptFuture<Resp> = BoxFuture<'static, Result<Response<Resp>, Status>>;

/// A client of order-service. Cheap to clone; clones share channels, throttle and statistics.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    replicas: Replicas,
    auth: AuthInterceptor,
    timeout: Duration,
    retry: RetryPolicy,
    throttle: RetryThrottle,
    stats: watch::Sender<CallStats>,
    metrics: Metrics,
}

/// Per-call choices; the defaults come from the client's [`Settings`].
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    request_id: Option<String>,
    authorization: Option<AsciiMetadataValue>,
    at_most_once: bool,
}

impl CallOptions {
    /// Options with every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overall deadline of this call instead of the client's.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The idempotency key of this call, instead of a generated one (CreateOrder and
    /// UpdateOrderStatus only). Reuse a key to make a repeated logical call safe across
    /// processes, e.g. an HTTP `Idempotency-Key`.
    pub fn request_id(mut self, key: impl Into<String>) -> Self {
        self.request_id = Some(key.into());
        self
    }

    /// The complete `authorization` value (e.g. `Bearer …`) to send instead of the client's
    /// token; used to act on behalf of a caller with exactly the caller's rights.
    pub fn authorization(mut self, value: AsciiMetadataValue) -> Self {
        self.authorization = Some(value);
        self
    }

    /// Never send the request again once a server may have received it, even for
    /// `UNAVAILABLE` (which a connection breaking after the request went out also gives): for
    /// calls that are not idempotent and carry no idempotency key, like rotating a secret
    /// (twice would retire the secret the caller still uses). Attempts that reached no server
    /// are still repeated until the deadline.
    pub fn at_most_once(mut self) -> Self {
        self.at_most_once = true;
        self
    }

    pub(crate) fn authorization_value(&self) -> Option<&AsciiMetadataValue> {
        self.authorization.as_ref()
    }

    pub(crate) fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }
}

/// Counters of what the client did, for monitoring and for tests that count attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Unary attempts sent, retries included.
    pub attempts: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Retries the throttle refused.
    pub throttled: u64,
    /// Watch streams re-opened after a disconnect.
    pub watch_resumptions: u64,
}

impl Client {
    /// A client for `settings`. Connections are made lazily on the first call, so this succeeds
    /// while order-service is down. Must be called inside a tokio runtime.
    ///
    /// Calls are measured with the instruments of the global meter provider
    /// ([`Metrics::global`]): create the client after `order_status_telemetry::init` to have
    /// them exported; without it they are no-ops and the client works the same.
    pub fn new(settings: Settings) -> Result<Self, SettingsError> {
        Self::with_metrics(settings, Metrics::global())
    }

    /// Like [`Client::new`], recording into `metrics` (e.g. those of a
    /// `order_status_telemetry::Telemetry` built without installing globals).
    pub fn with_metrics(settings: Settings, metrics: Metrics) -> Result<Self, SettingsError> {
        settings.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                replicas: Replicas::new(
                    &settings.endpoints,
                    settings.ejection_time,
                    settings.connect_timeout,
                    settings.ca_certificate_pem.as_deref(),
                    settings.client_identity.as_ref(),
                    &metrics,
                )?,
                auth: AuthInterceptor::new(settings.token.as_deref())?,
                timeout: settings.timeout,
                retry: settings.retry,
                throttle: RetryThrottle::new(settings.throttle),
                stats: watch::Sender::new(CallStats::default()),
                metrics,
            }),
        })
    }

    /// The default deadline of one call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// A live view of the client's counters.
    pub fn stats(&self) -> watch::Receiver<CallStats> {
        self.inner.stats.subscribe()
    }

    /// Creates an order. The request's `request_id` is, in order of preference, the one in
    /// `options`, the one in `request`, or a new one; the same key goes out on every retry.
    pub async fn create_order(
        &self,
        mut request: CreateOrderRequest,
        options: CallOptions,
    ) -> Result<Order, ClientError> {
        request.request_id = idempotency_key(&options, &request.request_id);
        self.unary("CreateOrder", request, &options, |mut grpc, request| {
            Box::pin(async move { grpc.create_order(request).await })
        })
        .await
    }

    /// Fetches one order.
    pub async fn get_order(
        &self,
        order_id: &str,
        options: CallOptions,
    ) -> Result<Order, ClientError> {
        let request = GetOrderRequest {
            order_id: order_id.to_owned(),
        };
        self.unary("GetOrder", request, &options, |mut grpc, request| {
            Box::pin(async move { grpc.get_order(request).await })
        })
        .await
    }

    /// Fetches one page of orders.
    pub async fn list_orders(
        &self,
        request: ListOrdersRequest,
        options: CallOptions,
    ) -> Result<ListOrdersResponse, ClientError> {
        self.unary("ListOrders", request, &options, |mut grpc, request| {
            Box::pin(async move { grpc.list_orders(request).await })
        })
        .await
    }

    /// Every order matching `request`'s filters, fetching page after page as the stream is read
    /// (each page is one call with its own deadline). Starts at `request.page_token`.
    pub fn list_all_orders(
        &self,
        request: ListOrdersRequest,
        options: CallOptions,
    ) -> impl Stream<Item = Result<Order, ClientError>> + Send + 'static {
        let client = self.clone();
        pages::every_item(request, move |request| {
            let client = client.clone();
            let options = options.clone();
            async move { client.list_orders(request, options).await }
        })
    }

    /// Moves an order to a new status; the idempotency key is chosen as for
    /// [`create_order`](Self::create_order).
    pub async fn update_order_status(
        &self,
        mut request: UpdateOrderStatusRequest,
        options: CallOptions,
    ) -> Result<Order, ClientError> {
        request.request_id = idempotency_key(&options, &request.request_id);
        self.unary(
            "UpdateOrderStatus",
            request,
            &options,
            |mut grpc, request| Box::pin(async move { grpc.update_order_status(request).await }),
        )
        .await
    }

    /// Events of one order (`order_id` set) or of all orders, after `after_sequence`, that
    /// survive disconnects: the stream re-opens with backoff after `UNAVAILABLE`, a server
    /// restart, a replica going away or a `WATCHER_TOO_SLOW` end, resuming after the last
    /// sequence delivered, so every event is seen once and in order. It ends with an error only
    /// when the server refuses the watch for good (e.g. `NOT_FOUND`, `OUT_OF_RANGE`,
    /// `PERMISSION_DENIED`). The options' timeout bounds each attempt to open the stream.
    pub fn watch_orders(
        &self,
        request: WatchOrdersRequest,
        options: CallOptions,
    ) -> OrderEventStream {
        OrderEventStream::new(self.clone(), request, options)
    }

    /// Like [`watch_orders`](Self::watch_orders), but opens the first stream before returning,
    /// so that a watch the server refuses fails here (for a caller that must answer before the
    /// first event, like an HTTP handler choosing its status code).
    pub async fn open_watch(
        &self,
        request: WatchOrdersRequest,
        options: CallOptions,
    ) -> Result<OrderEventStream, ClientError> {
        OrderEventStream::open(self.clone(), request, options).await
    }

    /// Whether some replica reports `orders.v1.OrderService` as SERVING over the standard
    /// health service (which needs no token), asking them all at once within `timeout`.
    pub async fn check_serving(&self, timeout: Duration) -> Result<(), ClientError> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let checks = self.inner.replicas.all().into_iter().map(|channel| {
            Box::pin(async move {
                let mut request = Request::new(HealthCheckRequest {
                    service: orders_proto::ORDER_SERVICE_NAME.to_owned(),
                });
                request.set_timeout(timeout);
                let mut health = HealthClient::new(channel);
                let check = health.check(request);
                let response = tokio::time::timeout(timeout, check)
                    .await
                    .map_err(|_| {
                        ClientError::synthetic(
                            Code::DeadlineExceeded,
                            format!("no health check answer within {}", readable(timeout)),
                            None,
                        )
                    })?
                    .map_err(ClientError::from)?;
                match response.into_inner().status() {
                    ServingStatus::Serving => Ok(()),
                    other => Err(ClientError::synthetic(
                        Code::Unavailable,
                        format!("order-service reports {}", other.as_str_name()),
                        None,
                    )),
                }
            })
        });
        futures::future::select_ok(checks).await.map(|_| ())
    }

    /// A replica for one attempt, `avoid`ing the one the previous attempt failed on.
    pub(crate) fn pick(&self, avoid: Option<usize>) -> (Pick, OrderServiceGrpc) {
        let (pick, channel) = self.pick_channel(avoid);
        (pick, OrderServiceClient::new(channel))
    }

    /// Like [`pick`](Self::pick), the bare authenticated channel for any service's client.
    fn pick_channel(&self, avoid: Option<usize>) -> (Pick, AuthedChannel) {
        let pick = self.inner.replicas.pick(avoid);
        let channel = InterceptedService::new(pick.channel.clone(), self.inner.auth.clone());
        (pick, channel)
    }

    pub(crate) fn replica_failed(&self, index: usize) {
        self.inner.replicas.eject(index);
    }

    pub(crate) fn replica_answered(&self, index: usize) {
        self.inner.replicas.mark_healthy(index);
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    pub(crate) fn count(&self, update: impl FnOnce(&mut CallStats)) {
        self.inner.stats.send_modify(update);
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// One unary `OrderService` call of `method` (the bare name, e.g. `GetOrder`): see
    /// [`unary_on`](Self::unary_on).
    async fn unary<Req, Resp>(
        &self,
        method: &'static str,
        message: Req,
        options: &CallOptions,
        send: impl Fn(OrderServiceGrpc, Request<Req>) -> AttemptFuture<Resp>,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
    {
        self.unary_on(SERVICE, method, message, options, |channel, request| {
            send(OrderServiceClient::new(channel), request)
        })
        .await
    }

    /// One unary call of `service`'s `method` (the bare name, e.g. `GetOrder`), `send` building
    /// that service's client on the attempt's channel: attempts until success, a final error,
    /// the attempt limit, the throttle, or the deadline, whichever comes first. The whole call
    /// is one span, each attempt a span beneath it.
    pub(crate) async fn unary_on<Req, Resp>(
        &self,
        service: &'static str,
        method: &'static str,
        message: Req,
        options: &CallOptions,
        send: impl Fn(AuthedChannel, Request<Req>) -> AttemptFuture<Resp>,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
    {
        let span = logical_call_span(service, method);
        let mut attempts = 0;
        let result = self
            .attempts(method, message, options, send, &mut attempts)
            .instrument(span.clone())
            .await;
        finish_logical_call(
            &span,
            attempts,
            result
                .as_ref()
                .map(|_| ())
                .map_err(|error| (error.code(), error.message())),
        );
        result
    }

    /// The attempts of [`Client::unary`]; `attempt` counts them as they are made.
    ///
    /// Two kinds of failed attempt are retried differently. One that never reached a server
    /// (no connection could be made) was not processed anywhere: it is tried again with capped
    /// backoff until the deadline, like gRPC's wait-for-ready, and spends neither the attempt
    /// limit nor the throttle's tokens, which ration retries of requests a server did receive.
    /// Any other retryable failure goes through both, except that a rate-limited one spends no
    /// throttle tokens (see [`is_rate_limited`]) and waits the server's `RetryInfo` delay, or,
    /// when that would not end before the deadline, fails at once.
    async fn attempts<Req, Resp>(
        &self,
        method: &'static str,
        message: Req,
        options: &CallOptions,
        send: impl Fn(AuthedChannel, Request<Req>) -> AttemptFuture<Resp>,
        attempt: &mut u32,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
    {
        let timeout = options.timeout_or(self.inner.timeout);
        let deadline = Instant::now() + timeout;
        let policy = &self.inner.retry;
        let mut avoid = None;
        let mut last_error: Option<ClientError> = None;
        // Attempts that reached a server and failed, and attempts in a row that reached none:
        // each drives its own backoff.
        let mut reached_failures = 0;
        let mut unreached_in_a_row = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::deadline_exceeded(
                    timeout,
                    *attempt,
                    last_error.as_ref(),
                ));
            }
            *attempt += 1;
            let attempt = *attempt;
            self.count(|s| {
                s.attempts += 1;
                s.retries += u64::from(attempt > 1);
            });
            let (pick, channel) = self.pick_channel(avoid);
            let mut request = Request::new(message.clone());
            // Sent as `grpc-timeout`, so the server stops working on it when the caller has
            // given up; tonic also enforces it on this side.
            request.set_timeout(remaining);
            if let Some(value) = &options.authorization {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            // The attempt's span carries it as `rpc.attempt`.
            request.extensions_mut().insert(AttemptNumber(attempt));
            // The outer timer also covers waiting for a connection, which the per-request
            // `grpc-timeout` does not.
            let error = match tokio::time::timeout_at(deadline, send(channel, request)).await {
                Err(_elapsed) => {
                    return Err(ClientError::deadline_exceeded(
                        timeout,
                        attempt,
                        last_error.as_ref(),
                    ));
                }
                Ok(Ok(response)) => {
                    self.inner.throttle.record_success();
                    self.replica_answered(pick.index);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => ClientError::from(status),
            };
            if error.code() == Code::DeadlineExceeded {
                return Err(ClientError::deadline_exceeded(
                    timeout,
                    attempt,
                    Some(&error),
                ));
            }
            // The next attempt goes elsewhere when there is an elsewhere; a replica that could
            // not be reached is also passed over by other calls for a while.
            if error.never_reached_a_server() {
                avoid = Some(pick.index);
                self.replica_failed(pick.index);
                unreached_in_a_row += 1;
                // Never past the deadline: the call ends there with DEADLINE_EXCEEDED (the
                // last error says why), as a wait-for-ready call does.
                let wait = policy.backoff(unreached_in_a_row);
                // The attempt itself took time (up to the connect timeout).
                let remaining = deadline.saturating_duration_since(Instant::now());
                if wait < remaining {
                    self.inner.metrics.record_retry(method, error.code());
                    tracing::debug!(%error, attempt, ?wait, reached_server = false, "retrying");
                }
                tokio::time::sleep(wait.min(remaining)).await;
                last_error = Some(error);
                continue;
            }
            unreached_in_a_row = 0;
            if options.at_most_once && error.code() == Code::Unavailable {
                // Perhaps processed: the caller must look before trying again.
                self.replica_failed(pick.index);
                return Err(error);
            }
            if !is_retryable(&error) {
                // The server answered; for the throttle that is not a failure (gRFC A6).
                self.inner.throttle.record_success();
                self.replica_answered(pick.index);
                return Err(error);
            }
            let rate_limited = is_rate_limited(&error);
            if !rate_limited {
                self.inner.throttle.record_failure();
            }
            reached_failures += 1;
            avoid = Some(pick.index);
            if error.code() == Code::Unavailable {
                self.replica_failed(pick.index);
            }
            if reached_failures >= policy.max_attempts {
                return Err(error);
            }
            if !rate_limited && !self.inner.throttle.allows_retry() {
                self.count(|s| s.throttled += 1);
                self.inner.metrics.record_throttled_retry(method);
                tracing::debug!(%error, "retry throttled");
                return Err(error);
            }
            let wait = if rate_limited {
                // When the principal's allowance has room again.
                error
                    .retry_delay()
                    .unwrap_or_else(|| policy.backoff(reached_failures))
            } else {
                match error.pushback() {
                    Some(Ok(wait)) => wait,
                    Some(Err(())) => return Err(error),
                    None => policy.backoff(reached_failures),
                }
            };
            if Instant::now() + wait >= deadline {
                // The next attempt could not start before the deadline: the last error is the
                // more useful answer, and it is given now rather than at the deadline.
                return Err(error);
            }
            self.inner.metrics.record_retry(method, error.code());
            tracing::debug!(%error, attempt, ?wait, reached_server = true, "retrying");
            tokio::time::sleep(wait).await;
            last_error = Some(error);
        }
    }
}

/// The idempotency key of a write: the caller's from `options`, else the request's own, else new.
pub(crate) fn idempotency_key(options: &CallOptions, in_request: &str) -> String {
    match &options.request_id {
        Some(key) => key.clone(),
        None if !in_request.is_empty() => in_request.to_owned(),
        None => new_request_id(),
    }
}
