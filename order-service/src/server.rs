//! The HTTP/2 accept loop. tonic's own `Server` is not used because its built-in timeout answers
//! expired deadlines with CANCELLED before our deadline layer can say DEADLINE_EXCEEDED; serving
//! tonic's routes with hyper directly also puts TCP_NODELAY, keepalive, the connection limits and
//! graceful draining in one visible place.
//!
//! The loop itself only accepts, counts and spawns: everything done for one connection (socket
//! options, the handshake under its deadline, serving) runs in that connection's own task, so a
//! slow or silent client can never hold up the others. Under TLS that includes the TLS
//! handshake: a client that connects and never sends its ClientHello costs one task until the
//! handshake deadline, nothing more.

mod connection_cap;
mod first_bytes;

use crate::error_chain::DisplayChain;
use crate::grpc::peer::PeerCertificate;
use crate::grpc::wire::Body;
use connection_cap::ConnectionCap;
use first_bytes::{FirstBytes, HTTP2_PREFACE_LEN};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use order_status_telemetry::AcceptErrors;
use order_status_tls::reload::CurrentConfig;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::Service;

/// Streams one connection may have open at once (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Request bytes one stream may have in flight, unread, before the server reads them
/// (the initial HTTP/2 stream window). Larger messages arrive in several windows.
pub const STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// Request bytes one connection may have in flight, unread, over all its streams (the
/// connection window): what a client that sends without the server reading can make it hold.
pub const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// Largest request header block (`SETTINGS_MAX_HEADER_LIST_SIZE`); a request with more is
/// refused by HTTP/2 itself.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Response bytes queued per stream for a client that does not read them.
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// HTTP/2 connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// Ping idle clients this often; a client that does not answer within the same time is
    /// dropped, so dead peers do not hold streams open forever.
    pub keepalive_interval: Duration,
    /// How long a new connection may take to send its first bytes (the HTTP/2 preface; a TLS
    /// handshake, when there is one, falls under the same deadline).
    pub handshake_timeout: Duration,
    /// Open connections at most; more are closed when accepted.
    pub max_connections: usize,
}

/// Serves `service` on every connection of `listener` until `stop` resolves, then stops
/// accepting, tells clients to go away (GOAWAY) and waits up to `grace` for calls in flight.
/// With `tls`, every connection is TLS, accepted with the configuration current when it was
/// accepted.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    settings: ConnectionSettings,
    tls: Option<CurrentConfig>,
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
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buf_size(SEND_BUFFER_BYTES);
    let http2 = Arc::new(http2);
    let draining = GracefulShutdown::new();
    let mut cap = ConnectionCap::new(settings.max_connections);
    let mut accept_errors = AcceptErrors::new("gRPC");
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: retrying at once would spin (and log)
                // until some connection ends; wait instead, longer each time.
                let pause = accept_errors.failed(&error);
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        accept_errors.accepted();
        let Some(slot) = cap.admit() else {
            drop(stream);
            continue;
        };
        let connection = Connection {
            stream,
            peer,
            handshake_deadline: Instant::now() + settings.handshake_timeout,
            slot,
            tls: tls.as_ref().map(|current| TlsAcceptor::from(current.get())),
        };
        tokio::spawn(connection.serve(Arc::clone(&http2), service.clone(), draining.watcher()));
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

/// One accepted connection, before anything was done with it.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// When the client must have sent its first bytes.
    handshake_deadline: Instant,
    /// Its place under the connection cap, given back when the connection ends.
    slot: OwnedSemaphorePermit,
    /// The TLS configuration to accept it with, if the listener is TLS.
    tls: Option<TlsAcceptor>,
}

/// The HTTP/2 connection builder every connection is served with.
type Http2 = Arc<hyper::server::conn::http2::Builder<TokioExecutor>>;

impl Connection {
    /// Serves the connection to its end, in its own task.
    async fn serve<S>(self, http2: Http2, service: S, draining: Watcher)
    where
        S: Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let Connection {
            stream,
            peer,
            handshake_deadline,
            slot: _slot,
            tls,
        } = self;
        // Without it, small responses wait for Nagle's algorithm (40 ms stalls).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %DisplayChain(&error), "could not set TCP_NODELAY");
        }
        let Some(acceptor) = tls else {
            let exchange = Exchange {
                http2,
                peer,
                handshake_deadline,
            };
            return exchange.serve(stream, service, draining).await;
        };
        let stream = match tokio::time::timeout_at(handshake_deadline, acceptor.accept(stream))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, error = %DisplayChain(&error), "TLS handshake failed");
                return;
            }
            Err(_elapsed) => {
                tracing::debug!(%peer, "closing a connection that did not complete its TLS handshake in time");
                return;
            }
        };
        // Only now, with the handshake complete, is the client's certificate known (and
        // verified against the client CA); every request of the connection carries it.
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .and_then(PeerCertificate::from_der);
        let service =
            tower::util::MapRequest::new(service, move |mut request: http::Request<Incoming>| {
                if let Some(certificate) = &certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                request
            });
        let exchange = Exchange {
            http2,
            peer,
            handshake_deadline,
        };
        exchange.serve(stream, service, draining).await;
    }
}

/// The HTTP/2 part of one connection, over TCP or over an established TLS session.
struct Exchange {
    http2: Http2,
    peer: SocketAddr,
    /// When the client must have sent its HTTP/2 preface.
    handshake_deadline: Instant,
}

impl Exchange {
    async fn serve<IO, S>(self, stream: IO, service: S, draining: Watcher)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let Exchange {
            http2,
            peer,
            handshake_deadline,
        } = self;
        let stream = FirstBytes::new(stream, HTTP2_PREFACE_LEN);
        let preface_arrived = stream.arrived();
        let connection = draining
            .watch(http2.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = &mut connection => ended,
            () = tokio::time::sleep_until(handshake_deadline) => {
                if !preface_arrived.load(Ordering::Acquire) {
                    tracing::debug!(%peer, "closing a connection that sent no HTTP/2 preface in time");
                    return;
                }
                connection.await
            }
        };
        if let Err(error) = ended {
            tracing::debug!(%peer, error = %DisplayChain(&error), "connection ended with an error");
        }
    }
}
