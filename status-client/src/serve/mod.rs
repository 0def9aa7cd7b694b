//! `status-client serve`: the HTTP/JSON face of order-service that most integrations expect.
//! Each request is forwarded with its caller's `Authorization`, under a deadline, and answered
//! in the proto3 JSON mapping; order events stream out as Server-Sent Events.
//!
//! Every request is a server span that continues an incoming `traceparent` (so the caller's
//! trace runs on through the gRPC call to order-service) and is measured; the metrics are
//! served as Prometheus text at `/metrics`.

mod access_log;
mod connections;
mod context;
mod errors;
mod events;
#[doc(hidden)]
pub mod fuzzing;
mod hub;
mod limits;
mod routes;
mod watch_pool;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use order_status_telemetry::PrometheusExposition;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{CommonArgs, ServeLimitArgs, ServeTlsArgs};
use crate::client::Client;
use crate::settings::Settings;
use order_status_tls::reload::{CurrentConfig, Reloader};
use order_status_tls::{SettingNames, TlsFiles};

pub use limits::UPSTREAM_MAX_HEADER_LIST_BYTES;

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
    /// The settings of the clients that carry the upstream watch streams, apart from the
    /// client of unary calls (normally the same settings as that client's).
    pub watch_client: Settings,
    /// What one connection and one request may do.
    pub limits: ServeLimits,
    /// HTTPS with this (current) configuration; plain HTTP when `None`.
    pub tls: Option<CurrentConfig>,
}

impl ServeSettings {
    /// The defaults, watches going through clients made from `watch_client`.
    pub fn new(watch_client: Settings) -> Self {
        Self {
            request_timeout: watch_client.timeout.min(MAX_REQUEST_TIMEOUT),
            metrics: None,
            watch_client,
            limits: ServeLimits::default(),
            tls: None,
        }
    }
}

/// Connection and stream limits (the `serve` flags of the same names).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A connection must deliver a complete request head within this long of opening or of
    /// its previous response, else it is closed.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    pub idle_timeout: Duration,
    /// Open HTTP connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// The largest request head accepted (names, values and 32 bytes per header, as HTTP/2
    /// counts a header list); larger is 431.
    pub max_header_bytes: usize,
    /// Upstream watch streams per order-service connection; more open another connection.
    pub watch_streams_per_connection: usize,
    /// Recent events each shared upstream watch keeps for clients that resume.
    pub sse_replay_events: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 15_000,
            max_header_bytes: 16 * 1024,
            watch_streams_per_connection: 500,
            sse_replay_events: 1024,
        }
    }
}

impl From<&ServeLimitArgs> for ServeLimits {
    fn from(args: &ServeLimitArgs) -> Self {
        Self {
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections as usize,
            max_header_bytes: args.max_header_bytes as usize,
            watch_streams_per_connection: args.watch_streams_per_connection as usize,
            sse_replay_events: args.sse_replay_events as usize,
        }
    }
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
    let limits = settings.limits;
    let pool = watch_pool::WatchPool::new(
        settings.watch_client,
        client.metrics().clone(),
        limits.watch_streams_per_connection,
    );
    let hub = hub::WatchHub::new(
        pool,
        limits.sse_replay_events,
        settings.request_timeout,
        stopping.clone(),
    );
    let app = routes::router(
        routes::AppState {
            client,
            hub: Arc::new(hub),
            max_header_bytes: limits.max_header_bytes,
            request_timeout: settings.request_timeout,
            stopping: stopping.clone(),
        },
        settings.metrics,
    );
    let connection_limits = connections::ConnectionLimits {
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        max_connections: limits.max_connections,
        max_header_bytes: limits.max_header_bytes,
    };
    connections::serve(listener, app, connection_limits, settings.tls, async move {
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
    limits: &ServeLimitArgs,
    tls: &ServeTlsArgs,
    metrics: Option<PrometheusExposition>,
) -> ExitCode {
    // Bad TLS files are bad settings: one message and the usage exit status, before binding.
    let tls = match gateway_tls(tls) {
        Ok(tls) => tls,
        Err(error) => {
            tracing::error!(error = %order_status_telemetry::DisplayChain(&error), "invalid TLS settings");
            eprintln!("error: {}", order_status_telemetry::DisplayChain(&error));
            return ExitCode::from(crate::cli::USAGE_ERROR);
        }
    };
    match run(common, http_addr, limits.into(), tls, metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::from(crate::cli::LOCAL_ERROR)
        }
    }
}

/// The variables that name the gateway's TLS files, for messages about them.
const TLS_SETTING_NAMES: SettingNames = SettingNames {
    cert: "STATUS_CLIENT_HTTP_TLS_CERT",
    key: "STATUS_CLIENT_HTTP_TLS_KEY",
    client_ca: "(none)",
};

/// How often the gateway's TLS files are checked for changes.
const TLS_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The TLS files of `args` and the configuration read from them, if HTTPS is asked for.
fn gateway_tls(
    args: &ServeTlsArgs,
) -> Result<Option<(TlsFiles, Arc<tokio_rustls::rustls::ServerConfig>)>, order_status_tls::TlsError>
{
    let (Some(cert), Some(key)) = (&args.http_tls_cert, &args.http_tls_key) else {
        return Ok(None);
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: None,
        alpn: order_status_tls::ALPN_HTTP1,
        settings: TLS_SETTING_NAMES,
    };
    let config = order_status_tls::load(&files)?;
    Ok(Some((files, config)))
}

async fn run(
    common: &CommonArgs,
    http_addr: SocketAddr,
    limits: ServeLimits,
    tls: Option<(TlsFiles, Arc<tokio_rustls::rustls::ServerConfig>)>,
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
    let client_settings = crate::cli::settings_for(common)?;
    let client = Client::new(client_settings.clone()).context("invalid client settings")?;
    // Signal handlers go in before the address is announced: a SIGTERM that follows the
    // announcement at once must already mean "drain", not the default "die".
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    // Also before the announcement: SIGHUP's default would end the process.
    let tls = match tls {
        Some((files, config)) => {
            let (reloader, current) = Reloader::new(files, config, TLS_POLL_INTERVAL)
                .context("installing the SIGHUP handler that reloads the TLS files")?;
            let stop = CancellationToken::new();
            tokio::spawn(reloader.run(stop.clone()));
            Some((current, stop.drop_guard()))
        }
        None => None,
    };
    let listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen on {http_addr}"))?;
    let local = listener.local_addr().context("listener has no address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "status-client listening on {local}")?;
        stdout.flush()?;
    }
    tracing::info!(addr = %local, https = tls.is_some(), endpoints = ?common.endpoint.0.iter().map(ToString::to_string).collect::<Vec<_>>(), "serving HTTP");
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
        watch_client: client_settings,
        limits,
        tls: tls
            .as_ref()
            .map(|(current, _stop_reloading)| current.clone()),
    };
    serve(listener, client, settings, shutdown)
        .await
        .context("HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// A future that completes on SIGTERM (how containers are stopped) or SIGINT (Ctrl-C); the
/// handlers are installed when this is called, not when the future is first polled.
pub(crate) fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
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
