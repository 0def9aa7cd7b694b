//! Tower layer for a gRPC client channel: one `SpanKind::Client` span per attempt, nested
//! under whatever span is current (the logical call a retry loop opened), with
//! `traceparent`/`tracestate`/`baggage` injected into the request headers, the gRPC status
//! recorded, and attempt duration and attempts in flight measured.

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
use crate::propagation::{context_of, inject_context, inject_current};

/// Which attempt of a logical call a request is (1 for the first). A retry loop puts it in
/// the request's extensions (`tonic::Request::extensions_mut`); the attempt span then
/// carries it as `rpc.attempt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptNumber(pub u32);

/// Observes every call made through the wrapped channel; see the module documentation.
#[derive(Clone, Debug)]
pub struct GrpcClientLayer {
    methods: Arc<MethodTable>,
    server: Option<(String, u16)>,
}

impl GrpcClientLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            methods: Arc::new(MethodTable::new(&metrics, Side::Client)),
            server: None,
        }
    }

    /// Names the server in `server.address`/`server.port`. Needed because tonic adds the
    /// origin inside the channel, so requests passing this layer carry only the path; when
    /// unset, the request URI's authority (if any) is used.
    pub fn with_server(mut self, endpoint: &http::Uri) -> Self {
        self.server = endpoint.host().map(|host| {
            let default_port = if endpoint.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            (host.to_owned(), endpoint.port_u16().unwrap_or(default_port))
        });
        self
    }
}

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientService {
            inner,
            methods: Arc::clone(&self.methods),
            server: self.server.clone(),
        }
    }
}

/// The service made by [`GrpcClientLayer`].
#[derive(Clone, Debug)]
pub struct GrpcClientService<S> {
    inner: S,
    methods: Arc<MethodTable>,
    server: Option<(String, u16)>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcClientService<S>
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
        let (address, port) = match (&self.server, request.uri().authority()) {
            (Some((host, port)), _) => (Some(host.clone()), Some(*port)),
            (None, Some(authority)) => (Some(authority.host().to_owned()), authority.port_u16()),
            (None, None) => (None, None),
        };
        // Numbers go in as i64: the OpenTelemetry layer turns other integer types into strings.
        let attempt = request
            .extensions()
            .get::<AttemptNumber>()
            .map(|a| i64::from(a.0));
        let span = tracing::info_span!(
            target: "order_status_telemetry::grpc",
            "grpc.client",
            otel.name = method.path(),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = method.service(),
            rpc.method = method.method(),
            server.address = address,
            server.port = port.map(i64::from),
            rpc.attempt = attempt,
            rpc.grpc.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let context = context_of(&span);
        if opentelemetry::trace::TraceContextExt::span(&context)
            .span_context()
            .is_valid()
        {
            inject_context(&context, request.headers_mut());
        } else {
            // No OpenTelemetry layer sees this span; still pass on any trace we are part of.
            inject_current(request.headers_mut());
        }
        let mut call = CallRecord::start(span.clone(), Side::Client, method);

        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            match response.instrument(span).await {
                Ok(response) => Ok(call.observe_response(response)),
                Err(error) => {
                    // tonic reports a channel error (no connection) as UNAVAILABLE.
                    call.finish(Code::Unavailable, &error.to_string());
                    Err(error)
                }
            }
        })
    }
}
