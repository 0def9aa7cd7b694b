//! Tower layer for a gRPC server: continues the caller's trace from `traceparent`, opens one
//! `SpanKind::Server` span per call with the RPC semantic-convention attributes, records
//! the gRPC status from the response headers or trailers, and measures call duration and
//! calls in flight.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Code;
use tonic::body::Body as TonicBody;
use tonic::codegen::BoxFuture;
use tonic::codegen::Bytes;
use tower::{Layer, Service};
use tracing::Instrument;

use super::call::{CallRecord, Side};
use super::call_metrics::MethodTable;
use crate::metrics::Metrics;
use crate::propagation::continue_trace_from;

/// The server span of the call, put into the request's extensions so inner layers and
/// handlers (tonic copies extensions into `tonic::Request`) can add to it.
#[derive(Clone, Debug)]
pub struct ServerCallSpan(pub tracing::Span);

/// Records who is calling on the server span of `extensions`' call (the principal's name,
/// never a token). Does nothing outside a call observed by [`GrpcServerLayer`].
pub fn record_principal(extensions: &http::Extensions, principal: &str) {
    if let Some(ServerCallSpan(span)) = extensions.get::<ServerCallSpan>() {
        span.record("principal", principal);
    }
}

/// Observes every call of the wrapped gRPC server; see the module documentation.
#[derive(Clone, Debug)]
pub struct GrpcServerLayer {
    methods: Arc<MethodTable>,
    untraced_services: Arc<[String]>,
}

impl GrpcServerLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            methods: Arc::new(MethodTable::new(&metrics, Side::Server)),
            untraced_services: Arc::from([]),
        }
    }

    /// Makes no spans for calls to these services (e.g. `grpc.health.v1.Health`, which a
    /// container health check calls every few seconds); their calls are still measured.
    pub fn without_spans_for<I, N>(mut self, services: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.untraced_services = services.into_iter().map(Into::into).collect();
        self
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            methods: Arc::clone(&self.methods),
            untraced_services: Arc::clone(&self.untraced_services),
        }
    }
}

/// The service made by [`GrpcServerLayer`].
#[derive(Clone, Debug)]
pub struct GrpcServerService<S> {
    inner: S,
    methods: Arc<MethodTable>,
    untraced_services: Arc<[String]>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError> + std::fmt::Display,
{
    type Response = Response<TonicBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = self.methods.method(request.uri().path());
        let authority = request.uri().authority();
        let traced = !self
            .untraced_services
            .iter()
            .any(|name| name == method.service());
        let span = if traced {
            tracing::info_span!(
                target: "order_status_telemetry::grpc",
                "grpc.server",
                otel.name = method.path(),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = method.service(),
                rpc.method = method.method(),
                server.address = authority.map(|a| a.host()),
                server.port = authority.and_then(|a| a.port_u16()).map(i64::from),
                rpc.grpc.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                principal = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        continue_trace_from(&span, request.headers());
        let mut call = CallRecord::start(span.clone(), Side::Server, method);
        request
            .extensions_mut()
            .insert(ServerCallSpan(span.clone()));

        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let result = response.instrument(span).await;
            match result {
                Ok(response) => Ok(call.observe_response(response)),
                Err(error) => {
                    call.finish(Code::Unknown, &error.to_string());
                    Err(error)
                }
            }
        })
    }
}
