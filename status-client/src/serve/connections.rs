//! `serve`'s HTTP/1.1 accept loop: every connection must deliver its request head in time, is
//! closed when nothing moves on it for too long, and there are never more than a set number
//! of them. (`axum::serve` has no timer, so it had none of these: idle and half-sent
//! connections stayed open for good.) Shaped like order-service's `server.rs`.
//!
//! Under HTTPS the TLS handshake runs in the connection's own task, under the same header-read
//! timeout, so a client that connects and says nothing holds up no one else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use order_status_telemetry::{AcceptErrors, DisplayChain};
use order_status_tls::reload::CurrentConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tonic::Code;

use super::errors::ApiError;

/// What one connection may do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// A connection must deliver a complete request head within this long of opening or of
    /// its previous response (so this also ends idle keep-alive connections).
    pub(crate) header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub(crate) max_connections: usize,
    /// The request head size the routes check (431 with a JSON body); hyper's own read
    /// buffer is made larger, so that the routes, not hyper's bare 431, answer around it.
    pub(crate) max_header_bytes: usize,
}

/// Refusals of connections over the cap being written at once; beyond it they are dropped
/// without an answer, so that a flood costs no more than this.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection is given to take its 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serves `app` on every connection of `listener` until `stop` completes, then stops accepting
/// and waits for the connections to finish their requests. With `tls`, every connection is
/// HTTPS, accepted with the configuration current when it was accepted.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<CurrentConfig>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(hyper_read_buffer(limits.max_header_bytes))
        .keep_alive(true);
    let draining = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let full = AtomicBool::new(false);
    let mut accept_errors = AcceptErrors::new("HTTP");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accept_errors.accepted();
                    // Without it, small responses wait for Nagle's algorithm (40 ms stalls).
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %DisplayChain(&error), "could not set TCP_NODELAY");
                    }
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        if !full.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                max_connections = limits.max_connections,
                                "connection limit reached; refusing new connections with 503 until some close"
                            );
                        }
                        // Under TLS the plain-text 503 would be gibberish to the client: the
                        // connection is just closed.
                        if tls.is_none() {
                            refuse(stream, &refusals);
                        }
                        continue;
                    };
                    if full.swap(false, Ordering::Relaxed) {
                        tracing::info!("below the connection limit again");
                    }
                    let activity = Arc::new(Activity::new());
                    let io = Tracked { inner: stream, activity: activity.clone() };
                    let connection = Connection {
                        http1: http1.clone(),
                        app: app.clone(),
                        peer,
                        activity,
                        limits,
                        tls: tls.as_ref().map(|current| TlsAcceptor::from(current.get())),
                    };
                    let draining = draining.watcher();
                    tokio::spawn(async move {
                        let _slot = slot;
                        connection.serve(io, draining).await;
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin, and say
                    // so once per episode rather than once per failure.
                    let pause = accept_errors.failed(&error);
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    draining.shutdown().await;
    Ok(())
}

/// One accepted connection and what it is served with.
struct Connection {
    http1: hyper::server::conn::http1::Builder,
    app: Router,
    peer: std::net::SocketAddr,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    /// The TLS configuration to accept it with, under HTTPS.
    tls: Option<TlsAcceptor>,
}

impl Connection {
    /// Serves the connection to its end (the TLS handshake first, under HTTPS), in its own task.
    async fn serve(self, io: Tracked, draining: Watcher) {
        let peer = self.peer;
        let Some(acceptor) = self.tls.clone() else {
            return self.exchange(io, draining).await;
        };
        // The handshake is part of delivering the first request head, so it falls under the
        // same timeout; a client that never sends its ClientHello is closed then.
        match tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => self.exchange(stream, draining).await,
            Ok(Err(error)) => {
                tracing::debug!(%peer, error = %DisplayChain(&error), "TLS handshake failed")
            }
            Err(_elapsed) => tracing::debug!(
                %peer,
                "closing a connection that did not complete its TLS handshake in time"
            ),
        }
    }

    /// HTTP/1.1 over the connection (plain or TLS) until it ends or nothing moves on it.
    async fn exchange<IO>(self, io: IO, draining: Watcher)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            http1,
            app,
            peer,
            activity,
            limits,
            tls: _,
        } = self;
        let connection =
            draining.watch(http1.serve_connection(TokioIo::new(io), TowerToHyperService::new(app)));
        tokio::select! {
            result = connection => if let Err(error) = result {
                tracing::debug!(%peer, error = %DisplayChain(&error), "connection ended with an error");
            },
            () = activity.idle_for(limits.idle_timeout) => {
                tracing::debug!(%peer, "closing a connection on which nothing moved");
            }
        }
    }
}

/// hyper answers a request head larger than its read buffer with a bare 431 of its own; the
/// buffer is kept well above `max_header_bytes` so that up to several times that, the routes
/// answer with the JSON body instead. It grows only as bytes arrive.
fn hyper_read_buffer(max_header_bytes: usize) -> usize {
    (4 * max_header_bytes).max(128 * 1024)
}

/// Answers a connection over the cap with a 503 JSON error once its request head has arrived
/// and closes it, unless too many refusals are in progress already (then it is just closed).
/// Either way within [`REFUSAL_LINGER`].
fn refuse(mut stream: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let body = ApiError::local(
            Code::Unavailable,
            "too many open connections; try again shortly",
            "TOO_MANY_CONNECTIONS",
        )
        .to_json();
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            // The request head first: a client that sees the answer before it has sent its
            // request takes the closed connection for a failure of its own (hyper's client
            // reports "operation was canceled").
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    return Ok(());
                }
                head.extend_from_slice(&chunk[..read]);
            }
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what else the client sent until it closes, so that closing with unread
            // bytes does not reset the connection before the client has read the answer.
            while stream.read(&mut chunk).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// When a byte last moved on a connection.
#[derive(Debug)]
struct Activity {
    started: Instant,
    /// Milliseconds after `started`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A connection that records when bytes move on it.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
