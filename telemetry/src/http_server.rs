//! Tower layer for a plain HTTP server (status-client's `serve`): continues the caller's
//! trace from `traceparent`, opens one `SpanKind::Server` span per request following the
//! OpenTelemetry HTTP semantic conventions, and measures request duration.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::trace::Status;
use tonic::codegen::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Metrics;
use crate::propagation::continue_trace_from;

/// Finds the route template of a request (e.g. `/orders/{id}`) in its extensions; with
/// axum: `|extensions| extensions.get::<MatchedPath>().map(|p| p.as_str().to_owned())`.
pub type RouteOf = Arc<dyn Fn(&http::Extensions) -> Option<String> + Send + Sync>;

/// Observes every request of the wrapped HTTP service; see the module documentation.
#[derive(Clone)]
pub struct HttpServerLayer {
    metrics: Metrics,
    route_of: Option<RouteOf>,
}

impl std::fmt::Debug for HttpServerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServerLayer").finish_non_exhaustive()
    }
}

impl HttpServerLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            route_of: None,
        }
    }

    /// Names spans `{method} {route}` with the route `route_of` finds; without it spans are
    /// named by the method alone (paths hold ids, which make poor span names).
    pub fn with_route(
        mut self,
        route_of: impl Fn(&http::Extensions) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.route_of = Some(Arc::new(route_of));
        self
    }
}

impl<S> Layer<S> for HttpServerLayer {
    type Service = HttpServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpServerService {
            inner,
            metrics: self.metrics.clone(),
            route_of: self.route_of.clone(),
        }
    }
}

/// The service made by [`HttpServerLayer`].
#[derive(Clone)]
pub struct HttpServerService<S> {
    inner: S,
    metrics: Metrics,
    route_of: Option<RouteOf>,
}

impl<S> std::fmt::Debug for HttpServerService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServerService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = request.method().as_str().to_owned();
        let route = self
            .route_of
            .as_ref()
            .and_then(|route_of| route_of(request.extensions()));
        let name = match &route {
            Some(route) => format!("{method} {route}"),
            None => method.clone(),
        };
        let span = tracing::info_span!(
            target: "order_status_telemetry::http",
            "http.server",
            otel.name = %name,
            otel.kind = "server",
            http.request.method = %method,
            http.route = route.as_deref(),
            url.path = %request.uri().path(),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        continue_trace_from(&span, request.headers());
        let mut attributes = vec![KeyValue::new("http.request.method", method)];
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route));
        }
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let result = response.instrument(span.clone()).await;
            match &result {
                Ok(response) => {
                    let status = response.status();
                    span.record("http.response.status_code", i64::from(status.as_u16()));
                    attributes.push(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    // For a server, only 5xx are its own failures (HTTP semantic conventions).
                    if status.is_server_error() {
                        span.record("error.type", status.as_str());
                        span.set_status(Status::error(status.to_string()));
                    }
                }
                Err(error) => {
                    span.record("error.type", "service_error");
                    span.set_status(Status::error(error.to_string()));
                    attributes.push(KeyValue::new("error.type", "service_error"));
                }
            }
            metrics
                .http_server_duration
                .record(started.elapsed().as_secs_f64(), &attributes);
            result
        })
    }
}
