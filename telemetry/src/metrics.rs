//! The project's metric instruments, defined once so both services, `/metrics` and the README
//! agree on names, units and attributes. Names follow the OpenTelemetry RPC semantic
//! conventions where one exists (`rpc.server.call.duration`, …); Prometheus sees them with
//! dots turned into underscores and the unit appended (`rpc_server_call_duration_seconds`).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

use crate::store_durations::StoreDurations;

/// Bucket boundaries in seconds for call and store latencies: 0.5 ms up to 30 s (the largest
/// deadline order-service accepts).
const LATENCY_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// Every instrument the services record into. Cheap to clone (instruments are handles).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub(crate) server_duration: Histogram<f64>,
    pub(crate) server_active: UpDownCounter<i64>,
    pub(crate) client_duration: Histogram<f64>,
    pub(crate) client_active: UpDownCounter<i64>,
    retries: Counter<u64>,
    throttled_retries: Counter<u64>,
    idempotent_replays: Counter<u64>,
    watch_streams: UpDownCounter<i64>,
    watch_events: Counter<u64>,
    /// Bound per operation and outcome: a store operation runs in every call.
    store_duration: Arc<StoreDurations>,
    pub(crate) http_server_duration: Histogram<f64>,
    pub(crate) spans_dropped: Counter<u64>,
    rate_limited: Counter<u64>,
    wal_size: Gauge<u64>,
    webhook_attempts: Counter<u64>,
    webhook_duration: Histogram<f64>,
    webhook_lag: Gauge<u64>,
}

impl Metrics {
    /// The instruments on the global meter provider (the one [`crate::init`] installs; a
    /// no-op one before). For code that has no [`crate::Telemetry`] at hand, e.g. a client
    /// library; call it after `init`, since instruments made earlier stay no-ops.
    pub fn global() -> Self {
        Self::new(&opentelemetry::global::meter(crate::pipeline::SCOPE))
    }

    /// Creates the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build()
        };
        Self {
            server_duration: seconds(
                "rpc.server.call.duration",
                "Duration of gRPC calls handled, by method and status code",
            ),
            server_active: meter
                .i64_up_down_counter("rpc.server.active_calls")
                .with_description("gRPC calls being handled now")
                .build(),
            client_duration: seconds(
                "rpc.client.call.duration",
                "Duration of gRPC call attempts made, by method and status code",
            ),
            client_active: meter
                .i64_up_down_counter("rpc.client.active_calls")
                .with_description("gRPC call attempts in flight now")
                .build(),
            retries: meter
                .u64_counter("rpc.client.retries")
                .with_description("gRPC call attempts that were retries, by method and the code that caused them")
                .build(),
            throttled_retries: meter
                .u64_counter("rpc.client.retries.throttled")
                .with_description("Retries not made because the retry budget was spent, by method")
                .build(),
            idempotent_replays: meter
                .u64_counter("orders.idempotent_replays")
                .with_description("Requests answered from the idempotency record instead of acting again, by method")
                .build(),
            watch_streams: meter
                .i64_up_down_counter("orders.watch.streams.active")
                .with_description("WatchOrders streams open now")
                .build(),
            watch_events: meter
                .u64_counter("orders.watch.events.sent")
                .with_description("Order events sent on WatchOrders streams")
                .build(),
            store_duration: Arc::new(StoreDurations::new(seconds(
                "orders.store.operation.duration",
                "Duration of order store operations, by operation and outcome",
            ))),
            http_server_duration: seconds(
                "http.server.request.duration",
                "Duration of HTTP requests served, by method, route and status code",
            ),
            spans_dropped: meter
                .u64_counter("telemetry.spans.dropped")
                .with_description("Spans that could not be exported (collector down or too slow), by reason")
                .build(),
            rate_limited: meter
                .u64_counter("orders.rate_limited_calls")
                .with_description("Calls refused because their principal was over its rate limit, by principal")
                .build(),
            wal_size: meter
                .u64_gauge("orders.store.wal.size")
                .with_unit("By")
                .with_description("Size of the SQLite store's write-ahead log file")
                .build(),
            webhook_attempts: meter
                .u64_counter("orders.webhook.attempts")
                .with_description("Webhook delivery attempts, by outcome (delivered, http_error, network_error, timeout, refused)")
                .build(),
            webhook_duration: seconds(
                "orders.webhook.delivery.duration",
                "Duration of webhook delivery attempts, from sending the request to the end of the response, by outcome",
            ),
            webhook_lag: meter
                .u64_gauge("orders.webhook.lag")
                .with_description("Events committed after an endpoint's delivered_through_sequence, by endpoint")
                .build(),
        }
    }

    /// A client is about to retry `method` (the bare name, e.g. `GetOrder`, as in the
    /// `rpc.method` label of the call metrics) after an attempt ended with `code`.
    pub fn record_retry(&self, method: &str, code: tonic::Code) {
        self.retries.add(
            1,
            &[
                KeyValue::new("rpc.method", method.to_owned()),
                KeyValue::new("rpc.grpc.status_code", code as i64),
            ],
        );
    }

    /// A client wanted to retry `method` (e.g. `GetOrder`) but its retry budget said no.
    pub fn record_throttled_retry(&self, method: &str) {
        self.throttled_retries
            .add(1, &[KeyValue::new("rpc.method", method.to_owned())]);
    }

    /// A request was answered from its idempotency record (`method` e.g. `CreateOrder`).
    pub fn record_idempotent_replay(&self, method: &str) {
        self.idempotent_replays
            .add(1, &[KeyValue::new("rpc.method", method.to_owned())]);
    }

    /// A watch stream opened; it counts as open until the returned guard is dropped.
    pub fn watch_stream_opened(&self) -> WatchStreamGuard {
        self.watch_streams.add(1, &[]);
        WatchStreamGuard {
            watch_streams: self.watch_streams.clone(),
        }
    }

    /// One event was sent on a watch stream.
    pub fn record_watch_event_sent(&self) {
        self.watch_events.add(1, &[]);
    }

    /// A store operation (`operation` e.g. `create_order`) took `elapsed`; `ok` tells whether
    /// it succeeded.
    pub fn record_store_operation(&self, operation: &'static str, elapsed: Duration, ok: bool) {
        self.store_duration
            .record(operation, elapsed.as_secs_f64(), ok);
    }

    /// A call of `principal` was refused for its rate limit. Principals are the fixed set of
    /// the tokens file, so the label's values are bounded (a method label would not be: a
    /// caller may name any path).
    pub fn record_rate_limited(&self, principal: &str) {
        self.rate_limited
            .add(1, &[KeyValue::new("principal", principal.to_owned())]);
    }
}

impl Metrics {
    /// The SQLite store's write-ahead log file is now `bytes` long.
    pub fn record_wal_size(&self, bytes: u64) {
        self.wal_size.record(bytes, &[]);
    }
}

impl Metrics {
    /// One webhook delivery attempt ended with `outcome` (a fixed set of words) after `elapsed`.
    pub fn record_webhook_attempt(&self, outcome: &'static str, elapsed: Duration) {
        let labels = [KeyValue::new("outcome", outcome)];
        self.webhook_attempts.add(1, &labels);
        self.webhook_duration.record(elapsed.as_secs_f64(), &labels);
    }

    /// Endpoint `endpoint` (a server-assigned id; their number is what the operators created)
    /// has `events` committed events after its cursor.
    pub fn record_webhook_lag(&self, endpoint: &str, events: u64) {
        self.webhook_lag
            .record(events, &[KeyValue::new("endpoint", endpoint.to_owned())]);
    }
}

/// Keeps a watch stream counted as open; dropping it counts the stream as closed.
#[derive(Debug)]
pub struct WatchStreamGuard {
    watch_streams: UpDownCounter<i64>,
}

impl Drop for WatchStreamGuard {
    fn drop(&mut self) {
        self.watch_streams.add(-1, &[]);
    }
}
