//! The one tower layer in front of the handlers. For every call, in order: authenticate, check
//! the scope and the principal's rate limit (order service only), take an admission slot (or
//! shed the call), set the deadlines; then run the handler under the work deadline, give
//! over-limit and undecodable messages their proper code, bound the response body by the
//! caller's deadline, and release the slot (an `orders.v1` call's when the handler answered, an
//! open service's when its response ended). Each step lives in its own module; this one only
//! puts them in order.

use super::admission::Admission;
use super::auth::{TokenSet, protected_method};
use super::codec_refusal;
use super::context::CallDeadline;
use super::deadline::CallDeadlines;
use super::peer::PeerCertificate;
use super::rate_limit::RateLimiter;
use super::wire::{Body, error_response};
use futures::future::BoxFuture;
use order_status_telemetry::Metrics;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// What the gate enforces.
#[derive(Debug, Clone)]
pub struct GateLayer {
    policy: Arc<Policy>,
}

#[derive(Debug)]
struct Policy {
    tokens: TokenSet,
    /// The rate limits of the tokens file's principals, checked right after authentication so
    /// that a refused call costs no admission slot and no work.
    rate_limiter: RateLimiter,
    /// Counts the calls the rate limiter refused.
    metrics: Metrics,
    admission: Admission,
    max_deadline: Duration,
}

impl GateLayer {
    /// Accepts `tokens` within their principals' rate limits (refusals counted in `metrics`),
    /// works on at most `max_calls` order-service calls at once, and gives a handler at most
    /// `max_deadline`.
    pub fn new(
        tokens: TokenSet,
        metrics: Metrics,
        max_calls: usize,
        max_deadline: Duration,
    ) -> Self {
        GateLayer {
            policy: Arc::new(Policy {
                rate_limiter: RateLimiter::new(tokens.rate_limits()),
                metrics,
                tokens,
                admission: Admission::new(max_calls),
                max_deadline,
            }),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// See [`GateLayer`].
#[derive(Debug, Clone)]
pub struct Gate<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, B> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let refuse =
            |status| -> Self::Future { Box::pin(std::future::ready(Ok(error_response(status)))) };
        if let Some(method) = protected_method(request.uri().path()) {
            let header = request.headers().get(http::header::AUTHORIZATION);
            // Put there by the accept loop for the connection's verified client certificate.
            let certificate = request.extensions().get::<PeerCertificate>();
            match self
                .policy
                .tokens
                .authorize_call(header, certificate, method)
            {
                Ok(principal) => {
                    order_status_telemetry::grpc::record_principal(
                        request.extensions(),
                        principal.as_str(),
                    );
                    if let Err(limited) = self.policy.rate_limiter.check(principal.as_str()) {
                        self.policy.metrics.record_rate_limited(principal.as_str());
                        return refuse(limited.status(principal.as_str()));
                    }
                    request.extensions_mut().insert(principal);
                }
                Err(status) => return refuse(status),
            }
        }
        let slot = match self.policy.admission.admit(request.uri().path()) {
            Ok(slot) => slot,
            Err(status) => return refuse(status),
        };
        let deadlines = CallDeadlines::new(request.headers(), self.policy.max_deadline);
        request
            .extensions_mut()
            .insert(CallDeadline(deadlines.work));
        let response = self.inner.call(request);
        Box::pin(async move {
            let answered = tokio::time::timeout_at(deadlines.work, response).await;
            let response = match answered {
                Ok(Ok(response)) => deadlines.bound_body(codec_refusal::translate(response)),
                Err(_elapsed) => deadlines.expired(),
            };
            Ok(slot.release_with(response))
        })
    }
}
