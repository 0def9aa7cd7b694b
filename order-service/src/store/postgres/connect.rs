//! How the PostgreSQL store reaches its server: the parsed connection settings, the TLS
//! connector (rustls on ring, the workspace's one crypto provider: linking aws-lc too makes
//! rustls panic), the connection pool, and dedicated connections for LISTEN.

use super::rows::into_error;
use crate::domain::Error;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// tokio-postgres's default idle time before TCP keepalive probes.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// Idle time before TCP keepalive probes on this store's connections.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);

/// How to reach PostgreSQL and how hard to try.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// Hosts (a directory is a Unix socket directory), database, user, password, `sslmode`.
    pub config: tokio_postgres::Config,
    /// Pooled connections per replica (the writers, the readers and the tailer share them;
    /// the LISTEN connection is one more).
    pub pool_size: usize,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// Longest one statement may run (`statement_timeout` of every session).
    pub statement_timeout: Duration,
}

impl fmt::Debug for PostgresSettings {
    // By hand: tokio_postgres::Config's own Debug already hides the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("config", &self.config)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl PostgresSettings {
    /// Where the server is, for logs: hosts, ports, database and user, never the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(dir) => dir.display().to_string(),
            })
            .collect();
        format!(
            "database {:?} on {} (port {:?}) as {:?}, sslmode {:?}",
            self.config.get_dbname().unwrap_or("(the user's)"),
            hosts.join(","),
            self.config.get_ports(),
            self.config.get_user().unwrap_or("(unset)"),
            self.config.get_ssl_mode(),
        )
    }

    /// The session settings every connection gets: the connect and statement timeouts, and a
    /// name in `pg_stat_activity`.
    fn session_config(&self) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        config.connect_timeout(self.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("order-service");
        }
        // A server gone without a word (a partition, a host lost) shows on an idle TCP
        // connection only through keepalives: the two hours of the default would leave the
        // LISTEN connection and pooled connections dead that long. Unless the URL says otherwise.
        if config.get_keepalives_idle() == DEFAULT_KEEPALIVES_IDLE {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        let timeout = format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis().max(1)
        );
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {timeout}"),
            _ => timeout,
        };
        config.options(options);
        config
    }
}

/// The TLS of every connection: none (`sslmode=disable`, and `prefer`, which this store takes
/// as "without TLS"), or rustls verifying the server against the system's trust store
/// (`sslmode=require`: stricter than libpq's `require`, which checks no certificate).
#[derive(Clone)]
pub(super) enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

impl Tls {
    pub(super) fn for_settings(settings: &PostgresSettings) -> Result<Self, Error> {
        if settings.config.get_ssl_mode() != SslMode::Require {
            return Ok(Tls::Plain);
        }
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "a system trust store certificate could not be read");
        }
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::Unavailable(
                "sslmode=require: the system trust store has no usable certificate to verify \
                 the PostgreSQL server with"
                    .into(),
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Tls::Rustls(MakeRustlsConnect::new(config)))
    }
}

/// The pool of connections every read, write and tail goes through. Connections are opened
/// when first needed and replaced when found closed (a server restart, a killed backend).
pub(super) fn pool(settings: &PostgresSettings, tls: &Tls) -> Result<Pool, Error> {
    let config = settings.session_config();
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Tls::Plain => Manager::from_config(config, NoTls, manager_config),
        Tls::Rustls(tls) => Manager::from_config(config, tls.clone(), manager_config),
    };
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .wait_timeout(Some(settings.connect_timeout + settings.statement_timeout))
        .build()
        .map_err(Error::internal)
}

/// A connection of its own (not pooled) whose notifications go to `notified`; it ends when the
/// returned driver future ends (the connection closed or failed).
pub(super) async fn listening_connection(
    settings: &PostgresSettings,
    tls: &Tls,
    notified: Arc<tokio::sync::Notify>,
) -> Result<(Client, tokio::task::JoinHandle<()>), Error> {
    let config = settings.session_config();
    match tls {
        Tls::Plain => drive(config, NoTls, notified).await,
        Tls::Rustls(tls) => drive(config, tls.clone(), notified).await,
    }
}

async fn drive<T>(
    config: tokio_postgres::Config,
    tls: T,
    notified: Arc<tokio::sync::Notify>,
) -> Result<(Client, tokio::task::JoinHandle<()>), Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await.map_err(into_error)?;
    let driver = tokio::spawn(async move {
        let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        futures::pin_mut!(messages);
        while let Some(message) = futures::StreamExt::next(&mut messages).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                Ok(AsyncMessage::Notice(notice)) => {
                    tracing::debug!(%notice, "PostgreSQL notice on the LISTEN connection")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(
                        error = %crate::error_chain::DisplayChain(&error),
                        "the LISTEN connection to PostgreSQL failed"
                    );
                    return;
                }
            }
        }
    });
    Ok((client, driver))
}
