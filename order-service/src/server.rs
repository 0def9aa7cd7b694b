//! The HTTP/2 accept loop. tonic's own `Server` is not used because its built-in timeout answers
//! expired deadlines with CANCELLED before our deadline layer can say DEADLINE_EXCEEDED; serving
//! tonic's routes with hyper directly also puts TCP_NODELAY, keepalive and graceful draining in
//! one visible place.

use crate::grpc::wire::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::Service;

/// HTTP/2 connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// Ping idle clients this often; a client that does not answer within the same time is
    /// dropped, so dead peers do not hold streams open forever.
    pub keepalive_interval: Duration,
}

/// Serves `service` on every connection of `listener` until `stop` resolves, then stops
/// accepting, tells clients to go away (GOAWAY) and waits up to `grace` for calls in flight.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    settings: ConnectionSettings,
    stop: impl Future<Output = ()>,
    grace: Duration,
) where
    S: Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.keepalive_interval))
        .keep_alive_timeout(settings.keepalive_interval)
        .max_concurrent_streams(1024);
    let draining = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Without it, small responses wait for Nagle's algorithm (40 ms stalls).
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
                    }
                    let connection = http2.serve_connection(
                        TokioIo::new(stream),
                        TowerToHyperService::new(service.clone()),
                    );
                    let connection = draining.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, draining.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "calls still in flight when the grace period ended; closing their connections"
        );
    }
}
