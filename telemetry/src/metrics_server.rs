//! A minimal HTTP/1 server answering `GET /metrics` with the Prometheus text, for a process
//! that has no HTTP server of its own (order-service's `ORDER_SERVICE_METRICS_ADDR`).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::exposition::PrometheusExposition;
use crate::{AcceptErrors, DisplayChain};

/// The path metrics are served on.
pub const METRICS_PATH: &str = "/metrics";

/// How long a connection may take to send a request's headers, and stay idle between requests:
/// a scraper sends its request at once, and a connection that sends nothing must not hold a file
/// descriptor for good.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` on `listener` until `shutdown` completes. Connections already accepted
/// finish on their own.
pub async fn serve_metrics(
    listener: TcpListener,
    exposition: PrometheusExposition,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut accept_errors = AcceptErrors::new("/metrics");
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Must not stop the server, nor spin (and log) while out of descriptors.
                    let pause = accept_errors.failed(&error);
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        accept_errors.accepted();
        let exposition = exposition.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&exposition, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %DisplayChain(&error), "a /metrics connection ended with an error");
            }
        });
    }
}

fn respond<B>(exposition: &PrometheusExposition, request: &Request<B>) -> Response<String> {
    if request.uri().path() != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    exposition.http_response()
}

fn plain(status: StatusCode, body: &'static str) -> Response<String> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body.to_owned())
        .expect("static status and header are valid")
}
