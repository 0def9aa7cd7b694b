//! Building the server from settings (store, handlers, layers, health, reflection), binding its
//! listener, and running it until a shutdown signal, then draining.

use crate::config::{Database, Settings};
use crate::error_chain::DisplayChain;
use crate::grpc::admission::OPEN_MAX_MESSAGE_BYTES;
use crate::grpc::gate::GateLayer;
use crate::grpc::orders::OrdersApi;
use crate::grpc::watch::WatchOptions;
use crate::grpc::watch_route::OrderRoutes;
use crate::grpc::webhooks::WebhooksApi;
use crate::observability::Observability;
use crate::server::{self, ConnectionSettings};
use crate::store::{
    InstrumentedStore, OrderStore, PostgresStore, SqliteStore, WalOptions, WebhookStore,
};
use crate::webhooks::client::HttpTransport;
use crate::webhooks::connector::Connector;
use crate::webhooks::dispatcher::{DeliverySettings, Dispatcher};
use crate::{domain, health};
use anyhow::Context as _;
use order_status_telemetry::grpc::GrpcServerLayer;
use order_status_tls::reload::{CurrentConfig, Reloader};
use orders_proto::v1::webhook_service_server::WebhookServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// How often old events and idempotency keys are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// A built server with its listener bound, ready to run.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics_listener: Option<TcpListener>,
    settings: Settings,
    store: Arc<dyn OrderStore>,
    /// The same database's webhook endpoints and deliveries.
    hooks: Arc<dyn WebhookStore>,
    observability: Observability,
    /// Under TLS: what renews the certificate, and the configuration it keeps current.
    tls: Option<(Reloader, CurrentConfig)>,
}

impl Application {
    /// Opens the store and binds the listeners. Nothing is served until
    /// [`Application::run_until`].
    pub async fn build(settings: Settings, observability: Observability) -> anyhow::Result<Self> {
        let (store, hooks): (Arc<dyn OrderStore>, Arc<dyn WebhookStore>) = match &settings.database
        {
            Database::Sqlite(path) => {
                let path = path.clone();
                let options = settings.store;
                let wal = WalOptions {
                    limit_bytes: settings.wal_limit_bytes,
                    metrics: Some(observability.metrics.clone()),
                };
                let store = tokio::task::spawn_blocking(move || {
                    SqliteStore::open_with(&path, options, wal)
                })
                .await?
                .map_err(describe)
                .context("opening the SQLite store")?;
                let store = Arc::new(store);
                let orders: Arc<dyn OrderStore> = Arc::new(InstrumentedStore::new(
                    Arc::clone(&store) as Arc<dyn OrderStore>,
                    "sqlite",
                    observability.metrics.clone(),
                    observability.spans_exported,
                ));
                (orders, store)
            }
            Database::Postgres(postgres) => {
                let store = PostgresStore::open((**postgres).clone(), settings.store)
                    .await
                    .map_err(describe)
                    .with_context(|| {
                        format!("opening the PostgreSQL store ({})", postgres.describe())
                    })?;
                let store = Arc::new(store);
                let orders: Arc<dyn OrderStore> = Arc::new(InstrumentedStore::new(
                    Arc::clone(&store) as Arc<dyn OrderStore>,
                    "postgresql",
                    observability.metrics.clone(),
                    observability.spans_exported,
                ));
                (orders, store)
            }
        };
        let listener = TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("binding {}", settings.addr))?;
        let local_addr = listener.local_addr()?;
        let tls = match &settings.tls {
            Some(tls) => Some(
                Reloader::new(
                    tls.files.clone(),
                    Arc::clone(&tls.config),
                    tls.reload_interval,
                )
                .context("installing the SIGHUP handler that reloads the TLS files")?,
            ),
            None => None,
        };
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics address {addr}"))?,
            ),
            None => None,
        };
        Ok(Application {
            listener,
            local_addr,
            metrics_listener,
            settings,
            store,
            hooks,
            observability,
            tls,
        })
    }

    /// The address the listener is bound to (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `signal` resolves, then shuts down gracefully: health turns NOT_SERVING,
    /// watch streams end with UNAVAILABLE, new calls are refused, calls in flight get the
    /// grace period to finish.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            listener,
            local_addr,
            metrics_listener,
            settings,
            store,
            hooks,
            observability,
            tls,
        } = self;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health_service = health_service.max_decoding_message_size(OPEN_MAX_MESSAGE_BYTES);
        health::set(&reporter, ServingStatus::Serving).await;
        let shutdown = CancellationToken::new();

        let api = OrdersApi::new(
            Arc::clone(&store),
            WatchOptions {
                slots: Arc::new(Semaphore::new(settings.max_watchers)),
                shutdown: shutdown.clone(),
                metrics: observability.metrics.clone(),
            },
            observability.metrics.clone(),
        );
        let orders = OrderRoutes::new(
            api,
            settings.max_message_bytes,
            settings.max_message_bytes.max(4 * 1024 * 1024),
        );
        let dispatcher = Dispatcher::new(
            Arc::clone(&store),
            Arc::clone(&hooks),
            Arc::new(HttpTransport::new(Connector::new(
                settings.webhooks.allowed_networks.clone(),
            ))),
            DeliverySettings {
                attempt_timeout: settings.webhooks.attempt_timeout,
                schedule: settings.webhooks.schedule.clone(),
                lease: settings.webhooks.lease,
                secrets: settings.webhooks.secrets.clone(),
                // One SQLite process sees every change itself (the API nudges the dispatcher,
                // commits wake the workers): polling is only a fallback there. Replicas on
                // PostgreSQL must notice each other's changes and renew their leases.
                poll: match settings.database {
                    Database::Sqlite(_) => crate::webhooks::dispatcher::SINGLE_PROCESS_POLL,
                    Database::Postgres(_) => crate::webhooks::dispatcher::POLL,
                },
            },
            observability.metrics.clone(),
        );
        let webhooks = WebhookServiceServer::new(WebhooksApi::new(
            Arc::clone(&hooks),
            Arc::clone(&store),
            settings.webhooks.clone(),
            Arc::clone(&dispatcher),
        ))
        .max_decoding_message_size(settings.max_message_bytes);
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(orders_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc error details, so grpcurl can show ErrorInfo and BadRequest.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let routes = tonic::service::Routes::new(orders)
            .add_service(webhooks)
            .add_service(health_service)
            .add_service(
                reflection()
                    .build_v1()?
                    .max_decoding_message_size(OPEN_MAX_MESSAGE_BYTES),
            )
            .add_service(
                reflection()
                    .build_v1alpha()?
                    .max_decoding_message_size(OPEN_MAX_MESSAGE_BYTES),
            )
            .prepare();
        let service = tower::ServiceBuilder::new()
            // Outermost, so its span (continuing the caller's trace) is the parent of all the
            // rest and even refused calls are traced, measured and logged.
            .layer(
                GrpcServerLayer::new(observability.metrics.clone())
                    .without_spans_for(["grpc.health.v1.Health"]),
            )
            .layer(GateLayer::new(
                settings.tokens.clone(),
                observability.metrics.clone(),
                settings.max_concurrent_calls,
                settings.max_deadline,
            ))
            .service(routes);

        let background = CancellationToken::new();
        let monitor = tokio::spawn(health::monitor(
            reporter.clone(),
            Arc::clone(&store),
            background.clone(),
        ));
        let pruner = tokio::spawn(prune_periodically(Arc::clone(&store), background.clone()));
        let deliveries = tokio::spawn(dispatcher.run(background.clone()));
        if let Some(listener) = metrics_listener {
            tokio::spawn(order_status_telemetry::serve_metrics(
                listener,
                observability.exposition.clone(),
                background.clone().cancelled_owned(),
            ));
        }

        let transport = match &settings.tls {
            None => "plaintext",
            Some(tls) if tls.files.client_ca.is_some() => "mutual TLS",
            Some(_) => "TLS",
        };
        if settings.tokens.maps_client_certificates()
            && settings
                .tls
                .as_ref()
                .is_none_or(|tls| tls.files.client_ca.is_none())
        {
            tracing::warn!(
                "the tokens file maps client certificates, but without ORDER_SERVICE_TLS_CLIENT_CA \
                 no client presents one: those entries are never used"
            );
        }
        let current_tls = tls.map(|(reloader, current)| {
            tokio::spawn(reloader.run(background.clone()));
            current
        });
        tracing::info!(addr = %local_addr, transport, "serving orders.v1");
        let stop = {
            let shutdown = shutdown.clone();
            let reporter = reporter.clone();
            let background = background.clone();
            async move {
                signal.await;
                tracing::info!("shutting down: NOT_SERVING, ending watch streams, draining calls");
                background.cancel();
                health::set(&reporter, ServingStatus::NotServing).await;
                shutdown.cancel();
            }
        };
        server::serve(
            listener,
            service,
            ConnectionSettings {
                keepalive_interval: settings.keepalive_interval,
                handshake_timeout: settings.handshake_timeout,
                max_connections: settings.max_connections,
            },
            current_tls,
            stop,
            settings.shutdown_grace,
        )
        .await;
        background.cancel();
        // They hold the store: once they are done, dropping ours closes it (queued writes
        // finish, the WAL is emptied, the file lock is released for a restart on the same file).
        let _ = tokio::join!(monitor, pruner, deliveries);
        drop(hooks);
        drop(store);
        tracing::info!("stopped");
        Ok(())
    }
}

async fn prune_periodically(store: Arc<dyn OrderStore>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = store.prune().await {
            tracing::warn!(error = %DisplayChain(&error), "pruning old records failed");
        }
    }
}

/// An error with its cause chain in one line, for start-up failures and logs.
fn describe(error: domain::Error) -> anyhow::Error {
    anyhow::Error::new(error)
}

/// A future that resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this
/// is called, not when the future is first polled, so a signal that arrives right after start-up
/// (say, after the "listening" line) still shuts down gracefully instead of killing the process.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}
