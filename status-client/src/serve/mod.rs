//! `status-client serve`: the HTTP/JSON face of order-service that most integrations expect.
//! Each request is forwarded with its caller's `Authorization`, under a deadline, and answered
//! in the proto3 JSON mapping; order events stream out as Server-Sent Events.
//!
//! Every request is a server span that continues an incoming `traceparent` (so the caller's
//! trace runs on through the gRPC call to order-service) and is measured; the metrics are
//! served as Prometheus text at `/metrics`.

mod access_log;
mod context;
mod errors;
mod events;
mod routes;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use order_status_telemetry::PrometheusExposition;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::CommonArgs;
use crate::client::Client;

/// The longest deadline `serve` gives a request, whatever `STATUS_CLIENT_TIMEOUT` says: an HTTP
/// caller that waits longer than this has most likely given up already.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the service treats requests.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The longest a request may take, also its deadline when the caller names none; an
    /// incoming `grpc-timeout` header can only shorten it.
    pub request_timeout: Duration,
    /// What `GET /metrics` renders; `None` leaves the route out (no metrics pipeline).
    pub metrics: Option<PrometheusExposition>,
}

/// Serves HTTP on `listener` until `shutdown` completes, then stops accepting, ends the event
/// streams and waits for the requests in flight (each bounded by its deadline).
pub async fn serve(
    listener: TcpListener,
    client: Client,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = CancellationToken::new();
    let app = routes::router(
        routes::AppState {
            client,
            request_timeout: settings.request_timeout,
            stopping: stopping.clone(),
        },
        settings.metrics,
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests, ending event streams");
            stopping.cancel();
        })
        .await
}

/// The `serve` subcommand: binds, announces the address on stdout, serves until SIGTERM or
/// Ctrl-C; `metrics` is what `/metrics` shows.
pub(crate) async fn run_from_cli(
    common: &CommonArgs,
    http_addr: SocketAddr,
    metrics: Option<PrometheusExposition>,
) -> ExitCode {
    match run(common, http_addr, metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::from(crate::cli::LOCAL_ERROR)
        }
    }
}

async fn run(
    common: &CommonArgs,
    http_addr: SocketAddr,
    metrics: Option<PrometheusExposition>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // No token of its own: every call carries its caller's `Authorization`, so the service never
    // acts with more rights than the caller has.
    if common.token.is_some() {
        tracing::warn!(
            "STATUS_CLIENT_TOKEN/--token is ignored by serve: callers' Authorization is passed on"
        );
    }
    let client =
        Client::new(crate::cli::settings_for(common)?).context("invalid client settings")?;
    // Signal handlers go in before the address is announced: a SIGTERM that follows the
    // announcement at once must already mean "drain", not the default "die".
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    let listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen on {http_addr}"))?;
    let local = listener.local_addr().context("listener has no address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "status-client listening on {local}")?;
        stdout.flush()?;
    }
    tracing::info!(addr = %local, endpoints = ?common.endpoint.0.iter().map(ToString::to_string).collect::<Vec<_>>(), "serving HTTP");
    if common.timeout > MAX_REQUEST_TIMEOUT {
        tracing::warn!(
            timeout = %humantime::format_duration(common.timeout),
            cap = %humantime::format_duration(MAX_REQUEST_TIMEOUT),
            "request timeout capped"
        );
    }
    let settings = ServeSettings {
        request_timeout: common.timeout.min(MAX_REQUEST_TIMEOUT),
        metrics,
    };
    serve(listener, client, settings, shutdown)
        .await
        .context("HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// A future that completes on SIGTERM (how containers are stopped) or SIGINT (Ctrl-C); the
/// handlers are installed when this is called, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
