//! A real OTLP/gRPC receiver for tests: accepts trace and metric exports like a collector
//! would, keeps every span in a simple form, and lets a test wait for the spans it expects.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

/// One received span, flattened: ids in lower-case hex, kind and status as short words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service_name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// The span name (for gRPC spans `package.Service/Method`).
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    /// `unset`, `ok` or `error`.
    pub status: String,
    /// The status message (set on errors).
    pub status_message: String,
    /// Span attributes; values as JSON strings, numbers, booleans or arrays.
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Names of the span's events (`exception`, log events, …).
    pub events: Vec<String>,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_time_unix_nano: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_time_unix_nano: u64,
    /// The spans it links to, as `<trace id>-<span id>` in hex.
    #[serde(default)]
    pub links: Vec<String>,
}

impl ReceivedSpan {
    /// A string attribute.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(serde_json::Value::as_str)
    }

    /// An integer attribute.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(serde_json::Value::as_i64)
    }

    /// Whether the span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

/// What the receiver has seen so far.
#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    trace_exports: usize,
    metric_exports: usize,
    metric_names: BTreeSet<String>,
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Received>>,
    /// Bumped on every export, so waiters wake without polling.
    changed: watch::Sender<u64>,
    sink: Option<mpsc::UnboundedSender<ReceivedSpan>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `wait_for_*` gave up.
#[derive(Debug, thiserror::Error)]
#[error("no matching spans within {timeout:?}; received {received} spans: {names:?}")]
pub struct WaitTimeout {
    timeout: Duration,
    received: usize,
    names: Vec<String>,
}

/// A running receiver; stops when dropped or with [`OtlpReceiver::stop`].
pub struct OtlpReceiver {
    addr: SocketAddr,
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl OtlpReceiver {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("valid address"), None).await
    }

    /// Starts on `addr`; every received span is also sent to `sink` when given.
    pub async fn start_on(
        addr: SocketAddr,
        sink: Option<mpsc::UnboundedSender<ReceivedSpan>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            received: Arc::default(),
            changed: watch::channel(0).0,
            sink,
        };
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(TraceReceiver(shared.clone())))
            .add_service(MetricsServiceServer::new(MetricsReceiver(shared.clone())))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = shutdown_rx.await;
            });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(shutdown),
            task: Some(tokio::spawn(server)),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.lock().spans.clone()
    }

    /// The spans of one trace.
    pub fn spans_in_trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.shared
            .lock()
            .spans
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// How many trace export requests arrived (0 proves nothing was sent).
    pub fn trace_exports(&self) -> usize {
        self.shared.lock().trace_exports
    }

    /// How many metric export requests arrived.
    pub fn metric_exports(&self) -> usize {
        self.shared.lock().metric_exports
    }

    /// Names of every metric received.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.shared.lock().metric_names.clone()
    }

    /// Waits until `done` holds for the spans received so far; returns them.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>, WaitTimeout> {
        self.wait_until(timeout, || {
            let received = self.shared.lock();
            done(&received.spans).then(|| received.spans.clone())
        })
        .await
    }

    /// Waits for the first span matching `matches`.
    pub async fn wait_for_span(
        &self,
        timeout: Duration,
        matches: impl Fn(&ReceivedSpan) -> bool,
    ) -> Result<ReceivedSpan, WaitTimeout> {
        self.wait_until(timeout, || {
            self.shared
                .lock()
                .spans
                .iter()
                .find(|span| matches(span))
                .cloned()
        })
        .await
    }

    /// Waits until a metric called `name` has been received.
    pub async fn wait_for_metric(&self, timeout: Duration, name: &str) -> Result<(), WaitTimeout> {
        self.wait_until(timeout, || {
            self.shared.lock().metric_names.contains(name).then_some(())
        })
        .await
    }

    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Result<T, WaitTimeout> {
        let mut changed = self.shared.changed.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                changed.borrow_and_update();
                if let Some(found) = check() {
                    return found;
                }
                if changed.changed().await.is_err() {
                    // The sender lives in `self`, so this cannot end; wait for the timeout.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        waited.map_err(|_| {
            let received = self.shared.lock();
            WaitTimeout {
                timeout,
                received: received.spans.len(),
                names: received
                    .spans
                    .iter()
                    .map(|span| span.name.clone())
                    .collect(),
            }
        })
    }

    /// Stops accepting exports and waits for the server to end (like a collector that
    /// went down: later exports get connection refused).
    pub async fn stop(mut self) {
        self.stop_server().await;
    }

    fn stop_server(&mut self) -> impl Future<Output = ()> + use<> {
        let shutdown = self.shutdown.take();
        let task = self.task.take();
        async move {
            if let Some(shutdown) = shutdown {
                let _ = shutdown.send(());
            }
            if let Some(task) = task {
                let _ = task.await;
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

struct TraceReceiver(Shared);

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = flatten(request.into_inner());
        {
            let mut received = self.0.lock();
            received.trace_exports += 1;
            received.spans.extend(spans.iter().cloned());
        }
        if let Some(sink) = &self.0.sink {
            for span in spans {
                let _ = sink.send(span);
            }
        }
        self.0.changed.send_modify(|count| *count += 1);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct MetricsReceiver(Shared);

#[tonic::async_trait]
impl MetricsService for MetricsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        {
            let mut received = self.0.lock();
            received.metric_exports += 1;
            let names = request
                .into_inner()
                .resource_metrics
                .into_iter()
                .flat_map(|resource| resource.scope_metrics)
                .flat_map(|scope| scope.metrics)
                .map(|metric| metric.name);
            received.metric_names.extend(names);
        }
        self.0.changed.send_modify(|count| *count += 1);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "service.name")
            .and_then(|attribute| attribute.value.as_ref())
            .map(|value| match any_to_json(value) {
                serde_json::Value::String(name) => name,
                other => other.to_string(),
            })
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
            let (status, status_message) = match span.status {
                Some(status) => (
                    StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset),
                    status.message,
                ),
                None => (StatusCode::Unset, String::new()),
            };
            spans.push(ReceivedSpan {
                service_name: service_name.clone(),
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                name: span.name,
                kind: match kind {
                    SpanKind::Unspecified => "unspecified",
                    SpanKind::Internal => "internal",
                    SpanKind::Server => "server",
                    SpanKind::Client => "client",
                    SpanKind::Producer => "producer",
                    SpanKind::Consumer => "consumer",
                }
                .to_owned(),
                status: match status {
                    StatusCode::Unset => "unset",
                    StatusCode::Ok => "ok",
                    StatusCode::Error => "error",
                }
                .to_owned(),
                status_message,
                attributes: attributes_to_json(&span.attributes),
                events: span.events.into_iter().map(|event| event.name).collect(),
                start_time_unix_nano: span.start_time_unix_nano,
                end_time_unix_nano: span.end_time_unix_nano,
                links: span
                    .links
                    .iter()
                    .map(|link| {
                        format!(
                            "{}-{}",
                            hex::encode(&link.trace_id),
                            hex::encode(&link.span_id)
                        )
                    })
                    .collect(),
            });
        }
    }
    spans
}

fn attributes_to_json(attributes: &[KeyValue]) -> BTreeMap<String, serde_json::Value> {
    attributes
        .iter()
        .map(|attribute| {
            let value = attribute
                .value
                .as_ref()
                .map(any_to_json)
                .unwrap_or(serde_json::Value::Null);
            (attribute.key.clone(), value)
        })
        .collect()
}

fn any_to_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as Json;
    match &value.value {
        Some(any_value::Value::StringValue(text)) => Json::String(text.clone()),
        Some(any_value::Value::BoolValue(flag)) => Json::Bool(*flag),
        Some(any_value::Value::IntValue(number)) => Json::from(*number),
        Some(any_value::Value::DoubleValue(number)) => Json::from(*number),
        Some(any_value::Value::ArrayValue(array)) => {
            Json::Array(array.values.iter().map(any_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => {
            Json::Object(attributes_to_json(&list.values).into_iter().collect())
        }
        Some(any_value::Value::BytesValue(bytes)) => Json::String(hex::encode(bytes)),
        Some(other) => Json::String(format!("{other:?}")),
        None => Json::Null,
    }
}
