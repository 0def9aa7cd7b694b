//! Test harness: a real tonic server (the standard Health service) behind the server
//! layer, a client channel behind the client layer, and a real OTLP/gRPC receiver.

#![allow(dead_code, unreachable_pub)]

/// The receiver of the workspace's tests crate, compiled into these tests directly: the
/// tests crate depends on both services, which depend on this crate.
#[path = "../../../tests/src/otlp_receiver.rs"]
pub mod otlp_receiver;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use order_status_telemetry::grpc::{
    GrpcClientLayer, GrpcClientService, GrpcServerLayer, record_principal,
};
use order_status_telemetry::{Metrics, Telemetry, TelemetryConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;

#[allow(unused_imports)]
pub use otlp_receiver::{OtlpReceiver, ReceivedSpan};

/// The principal the test server's "auth layer" records.
pub const PRINCIPAL: &str = "test-principal";

/// A configuration exporting to `endpoint` (or nothing).
pub fn config(endpoint: Option<String>) -> TelemetryConfig {
    let mut config = TelemetryConfig::new("telemetry-test");
    config.traces_endpoint = endpoint.clone();
    config.metrics_endpoint = endpoint;
    config
}

/// A subscriber with the OpenTelemetry layer of `telemetry`, for `set_default`.
pub fn subscriber(telemetry: &Telemetry) -> impl Subscriber + Send + Sync {
    tracing_subscriber::registry().with(telemetry.tracing_layer())
}

/// A Health server behind [`GrpcServerLayer`] (and an inner layer recording the principal,
/// as order-service's auth layer does), on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(metrics: &Metrics) -> Self {
        Self::start_with(GrpcServerLayer::new(metrics.clone())).await
    }

    pub async fn start_with(server_layer: GrpcServerLayer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let layers = ServiceBuilder::new()
            .layer(server_layer)
            .map_request(|request: http::Request<tonic::body::Body>| {
                record_principal(request.extensions(), PRINCIPAL);
                request
            })
            .into_inner();
        let server = tonic::transport::Server::builder()
            .layer(layers)
            .add_service(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(server);
        Self {
            addr,
            shutdown: Some(shutdown),
        }
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub type TracedClient = HealthClient<GrpcClientService<Channel>>;

/// A Health client whose channel goes through [`GrpcClientLayer`].
pub fn client(uri: http::Uri, metrics: &Metrics) -> TracedClient {
    let channel = Channel::builder(uri.clone()).connect_lazy();
    let layered = ServiceBuilder::new()
        .layer(GrpcClientLayer::new(metrics.clone()).with_server(&uri))
        .service(channel);
    HealthClient::new(layered)
}

/// `Check("")` (the whole server: SERVING) or `Check(service)` (unknown: NOT_FOUND).
pub fn check(service: &str) -> tonic::Request<HealthCheckRequest> {
    tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    })
}

/// Log output captured in memory.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
