//! A live OTLP/gRPC collector inside the benchmark process: it accepts trace and metric exports
//! as an OpenTelemetry Collector's OTLP receiver does (tonic servers of opentelemetry-proto's
//! generated services) and counts what arrives: spans by name and kind, export requests, and
//! the exporting SDK's own count of spans it dropped because its queue was full. Nothing is
//! kept but the counts, so a run of millions of spans costs the benchmark no memory.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

/// The SDK metric counting spans its batch processor finished with (`error.type` set when
/// they were dropped).
const SPANS_PROCESSED_METRIC: &str = "otel.sdk.processor.span.processed";

/// What the collector has received so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Received {
    /// Spans, by `(kind, name)`, e.g. `("server", "orders.v1.OrderService/GetOrder")`.
    pub spans: BTreeMap<(String, String), u64>,
    /// Trace export requests.
    pub trace_exports: u64,
    /// Metric export requests.
    pub metric_exports: u64,
    /// The exporter's latest `otel.sdk.processor.span.processed` totals by `error.type`
    /// (`""` for spans handed to the exporter; `queue_full` for spans dropped), as pushed with
    /// its metrics.
    pub spans_processed: BTreeMap<String, u64>,
}

impl Received {
    /// Every span received.
    pub fn span_count(&self) -> u64 {
        self.spans.values().sum()
    }

    /// Spans of one kind and name.
    pub fn spans_of(&self, kind: &str, name: &str) -> u64 {
        self.spans
            .get(&(kind.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Spans the exporter says it dropped because its queue was full (as of its last metric
    /// export).
    pub fn dropped_queue_full(&self) -> u64 {
        self.spans_processed.get("queue_full").copied().unwrap_or(0)
    }
}

/// A running collector on `127.0.0.1`; stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Collector {
    /// Starts listening on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Collector> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(Traces(Arc::clone(&received)))
                    .max_decoding_message_size(64 * 1024 * 1024),
            )
            .add_service(
                MetricsServiceServer::new(Metrics(Arc::clone(&received)))
                    .max_decoding_message_size(64 * 1024 * 1024),
            )
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(async move {
            if let Err(error) = server.await {
                eprintln!("bench: the OTLP collector stopped: {error}");
            }
        });
        Ok(Collector {
            addr,
            received,
            shutdown: Some(shutdown),
        })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What has arrived so far.
    pub fn received(&self) -> Received {
        lock(&self.received).clone()
    }

    /// Waits until `kind`/`name` spans stop arriving (no new one for `quiet`, which should be
    /// longer than the exporter's batch delay), at most `limit`; returns what arrived.
    pub async fn settle(
        &self,
        kind: &str,
        name: &str,
        quiet: Duration,
        limit: Duration,
    ) -> Received {
        let started = tokio::time::Instant::now();
        let mut last = self.received().spans_of(kind, name);
        let mut last_change = started;
        while started.elapsed() < limit && last_change.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.received().spans_of(kind, name);
            if now != last {
                last = now;
                last_change = tokio::time::Instant::now();
            }
        }
        self.received()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn lock(received: &Mutex<Received>) -> MutexGuard<'_, Received> {
    received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

struct Traces(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        // Counted outside the lock, then added in one go.
        let mut counted: BTreeMap<(String, String), u64> = BTreeMap::new();
        for span in request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
        {
            *counted
                .entry((kind_name(span.kind).to_owned(), span.name))
                .or_default() += 1;
        }
        let mut received = lock(&self.0);
        received.trace_exports += 1;
        for (key, count) in counted {
            *received.spans.entry(key).or_default() += count;
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Metrics(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut processed: BTreeMap<String, u64> = BTreeMap::new();
        for found in request
            .into_inner()
            .resource_metrics
            .into_iter()
            .flat_map(|resource| resource.scope_metrics)
            .flat_map(|scope| scope.metrics)
            .filter(|found| found.name == SPANS_PROCESSED_METRIC)
        {
            let Some(metric::Data::Sum(sum)) = found.data else {
                continue;
            };
            for point in sum.data_points {
                let error_type = point
                    .attributes
                    .iter()
                    .find(|attribute| attribute.key == "error.type")
                    .and_then(|attribute| attribute.value.as_ref())
                    .and_then(|value| match &value.value {
                        Some(any_value::Value::StringValue(text)) => Some(text.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let value = match point.value {
                    Some(number_data_point::Value::AsInt(value)) => value.max(0) as u64,
                    Some(number_data_point::Value::AsDouble(value)) => value.max(0.0) as u64,
                    None => 0,
                };
                *processed.entry(error_type).or_default() += value;
            }
        }
        let mut received = lock(&self.0);
        received.metric_exports += 1;
        // Cumulative sums: the latest export holds the totals.
        received.spans_processed.extend(processed);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}
