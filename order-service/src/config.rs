//! Settings from flags and environment variables (every flag has a variable of the same meaning),
//! checked before anything is opened or bound, so a bad setting is one clear message and a
//! non-zero exit.

use crate::grpc::auth::{TokenSet, TokensFileError};
use crate::store::{DEFAULT_WAL_LIMIT_BYTES, PostgresSettings, Retention, StoreOptions};
use crate::webhooks::WebhookSettings;
use crate::webhooks::network::AllowedNetworks;
use crate::webhooks::schedule::RetrySchedule;
use crate::webhooks::secrets::SecretBox;
use clap::{ArgAction, Args, Parser, Subcommand};
use order_status_tls::{SettingNames, TlsError, TlsFiles};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The command line of the `order-service` binary.
#[derive(Debug, Parser)]
#[command(
    name = "order-service",
    version,
    about = "The orders.v1 gRPC service: the system of record for orders and their status.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve (the default).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands other than serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Asks a running order-service for its gRPC health; exits 0 when it is SERVING.
    /// Made for container health checks, where there is no shell or grpc_health_probe.
    Healthcheck(HealthcheckArgs),
}

/// Flags of `order-service healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The service's address; an unspecified IP (0.0.0.0, [::]) means this host.
    #[arg(long, env = "ORDER_SERVICE_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// PEM CA bundle that signed the server's certificate: check over TLS instead of plaintext
    /// (for a server started with `--tls-cert`).
    #[arg(long, env = "ORDER_SERVICE_HEALTHCHECK_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate to present, for a server that requires one (`--tls-client-ca`).
    #[arg(long, env = "ORDER_SERVICE_HEALTHCHECK_CLIENT_CERT",
          requires_all = ["client_key", "ca_cert"])]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `--client-cert`.
    #[arg(
        long,
        env = "ORDER_SERVICE_HEALTHCHECK_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Name the server's certificate must carry; the address's IP when unset.
    #[arg(
        long,
        env = "ORDER_SERVICE_HEALTHCHECK_TLS_SERVER_NAME",
        requires = "ca_cert"
    )]
    pub tls_server_name: Option<String>,
}

/// Flags of serving.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "ORDER_SERVICE_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Where orders are stored: sqlite://PATH (created on first start), or a PostgreSQL URL,
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=disable|prefer|require (libpq forms:
    /// a percent-encoded socket directory as HOST, or ?host=/run/postgresql).
    #[arg(
        long,
        env = "ORDER_SERVICE_DATABASE_URL",
        default_value = "sqlite://orders.db"
    )]
    pub database_url: String,
    /// TOML file of accepted tokens (SHA-256 hashes with principal and scopes).
    #[arg(long, env = "ORDER_SERVICE_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Development mode: run without a tokens file, with one generated token (printed once)
    /// that has every scope. Never use it in production.
    #[arg(long, env = "ORDER_SERVICE_DEV", action = ArgAction::SetTrue,
          conflicts_with = "tokens_file")]
    pub dev: bool,
    /// Where to serve Prometheus metrics (`GET /metrics`); off when unset.
    #[arg(long, env = "ORDER_SERVICE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How long in-flight calls may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "ORDER_SERVICE_SHUTDOWN_GRACE", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Longest a unary call may work, whatever deadline the client sets.
    #[arg(long, env = "ORDER_SERVICE_MAX_DEADLINE", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub max_deadline: Duration,
    /// Calls worked on at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "ORDER_SERVICE_MAX_CONCURRENT_CALLS",
        default_value_t = 1024
    )]
    pub max_concurrent_calls: usize,
    /// Open WatchOrders streams at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ORDER_SERVICE_MAX_WATCHERS", default_value_t = 10_000)]
    pub max_watchers: usize,
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "ORDER_SERVICE_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,
    /// How long events are kept for resuming watches (an order's latest event is kept always).
    #[arg(long, env = "ORDER_SERVICE_EVENT_RETENTION", default_value = "7days",
          value_parser = humantime::parse_duration)]
    pub event_retention: Duration,
    /// How long idempotency keys are kept; at least 24h.
    #[arg(long, env = "ORDER_SERVICE_IDEMPOTENCY_RETENTION", default_value = "48h",
          value_parser = humantime::parse_duration)]
    pub idempotency_retention: Duration,
    /// Live events buffered for the slowest watcher; one that falls further behind is cut off
    /// with RESOURCE_EXHAUSTED and resumes from its last sequence.
    #[arg(long, env = "ORDER_SERVICE_WATCH_BUFFER", default_value_t = 4096)]
    pub watch_buffer: usize,
    /// Interval of HTTP/2 keepalive pings to idle clients.
    #[arg(long, env = "ORDER_SERVICE_KEEPALIVE_INTERVAL", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,
    /// How long a new connection may take to send the HTTP/2 client preface (its first
    /// bytes); one that has not is closed, so silent connections cannot hold file descriptors.
    #[arg(long, env = "ORDER_SERVICE_HANDSHAKE_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Open client connections at once; further ones are closed as soon as they are accepted
    /// (keep it below the process's file limit, `ulimit -n`).
    #[arg(long, env = "ORDER_SERVICE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Size of the SQLite write-ahead log past which the writer checkpoints and empties it
    /// between two batches of writes (so sustained writes cannot grow it without bound).
    #[arg(long, env = "ORDER_SERVICE_WAL_LIMIT_BYTES", default_value_t = DEFAULT_WAL_LIMIT_BYTES)]
    pub wal_limit_bytes: u64,
    /// PostgreSQL: connections pooled per replica.
    #[arg(long, env = "ORDER_SERVICE_PG_POOL_SIZE", default_value_t = 16)]
    pub pg_pool_size: usize,
    /// PostgreSQL: how long opening one connection may take.
    #[arg(long, env = "ORDER_SERVICE_PG_CONNECT_TIMEOUT", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub pg_connect_timeout: Duration,
    /// PostgreSQL: longest one statement may run (the session's statement_timeout).
    #[arg(long, env = "ORDER_SERVICE_PG_STATEMENT_TIMEOUT", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub pg_statement_timeout: Duration,
    /// PEM certificate chain (the server's certificate first): serve gRPC over TLS, ALPN h2.
    /// Needs --tls-key.
    #[arg(
        long,
        env = "ORDER_SERVICE_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS certificate.
    #[arg(
        long,
        env = "ORDER_SERVICE_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mutual TLS). Needs TLS.
    #[arg(
        long,
        env = "ORDER_SERVICE_TLS_CLIENT_CA",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for changes (SIGHUP reloads them at once).
    #[arg(long, env = "ORDER_SERVICE_TLS_RELOAD_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,
    /// Webhooks: networks (comma-separated CIDRs, e.g. 10.0.0.0/8,fd00::/8) that deliveries may
    /// reach although they are private, loopback, link-local, shared or ULA; http:// URLs are
    /// accepted only for hosts inside them.
    #[arg(long, env = "ORDER_SERVICE_WEBHOOK_ALLOW_NETWORKS", default_value = "")]
    pub webhook_allow_networks: String,
    /// Webhooks: longest one delivery attempt may take (connect, request, response).
    #[arg(long, env = "ORDER_SERVICE_WEBHOOK_ATTEMPT_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub webhook_attempt_timeout: Duration,
    /// Webhooks: waits after each failed attempt of one event (comma-separated durations); the
    /// endpoint is disabled when they are used up.
    #[arg(
        long,
        env = "ORDER_SERVICE_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,14h,20h,24h"
    )]
    pub webhook_retry_schedule: String,
    /// Webhooks: file with a 32-byte key (raw, 64 hex digits or base64) that encrypts signing
    /// secrets at rest (AES-256-GCM); kept in plain text when unset.
    #[arg(
        long,
        env = "ORDER_SERVICE_WEBHOOK_SECRETS_KEY_FILE",
        value_name = "PATH"
    )]
    pub webhook_secrets_key_file: Option<PathBuf>,
    /// Webhooks on PostgreSQL: how long a replica's claim on an endpoint lasts unless renewed
    /// (renewed every second); another replica takes the endpoint over after it.
    #[arg(long, env = "ORDER_SERVICE_WEBHOOK_LEASE", default_value = "15s",
          value_parser = humantime::parse_duration)]
    pub webhook_lease: Duration,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every replica.
    Postgres(Box<PostgresSettings>),
}

/// Validated settings of a server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub addr: SocketAddr,
    /// The store.
    pub database: Database,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Accepted tokens.
    pub tokens: TokenSet,
    /// In development mode, the generated token (shown once at start).
    pub dev_token: Option<String>,
    /// See [`ServeArgs::shutdown_grace`].
    pub shutdown_grace: Duration,
    /// See [`ServeArgs::max_deadline`].
    pub max_deadline: Duration,
    /// See [`ServeArgs::max_concurrent_calls`].
    pub max_concurrent_calls: usize,
    /// See [`ServeArgs::max_watchers`].
    pub max_watchers: usize,
    /// See [`ServeArgs::max_message_bytes`].
    pub max_message_bytes: usize,
    /// Retention and live event buffer of the store.
    pub store: StoreOptions,
    /// See [`ServeArgs::keepalive_interval`].
    pub keepalive_interval: Duration,
    /// See [`ServeArgs::handshake_timeout`].
    pub handshake_timeout: Duration,
    /// See [`ServeArgs::max_connections`].
    pub max_connections: usize,
    /// See [`ServeArgs::wal_limit_bytes`].
    pub wal_limit_bytes: u64,
    /// TLS, when the listener serves it.
    pub tls: Option<TlsSettings>,
    /// Webhook delivery.
    pub webhooks: WebhookSettings,
}

/// The listener's TLS: its files and the configuration read from them at start-up.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Where the certificate, key and client CA are (read again on reload).
    pub files: TlsFiles,
    /// The configuration built from them, checked before anything is bound.
    pub config: std::sync::Arc<rustls::ServerConfig>,
    /// See [`ServeArgs::tls_reload_interval`].
    pub reload_interval: Duration,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither a tokens file nor development mode.
    #[error(
        "no tokens file: set ORDER_SERVICE_TOKENS_FILE (or --tokens-file), \
         or start with --dev (ORDER_SERVICE_DEV=true) for a development token"
    )]
    NoTokens,
    /// The tokens file is unusable.
    #[error(transparent)]
    Tokens(#[from] TokensFileError),
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The database URL is not understood.
    #[error("ORDER_SERVICE_DATABASE_URL {url:?}: {problem}")]
    DatabaseUrl {
        /// The URL given, its password hidden.
        url: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The PostgreSQL URL does not parse.
    #[error("ORDER_SERVICE_DATABASE_URL {url:?} is not a PostgreSQL URL libpq would accept")]
    PostgresUrl {
        /// The URL given, its password hidden.
        url: String,
        /// What the parser says.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The webhook secrets key file is unusable.
    #[error(transparent)]
    WebhookSecrets(#[from] crate::webhooks::secrets::SecretsError),
    /// A number or duration is out of range.
    #[error("{setting} {problem}")]
    OutOfRange {
        /// The variable.
        setting: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The variables that name the TLS files, for messages about them.
const TLS_SETTING_NAMES: SettingNames = SettingNames {
    cert: "ORDER_SERVICE_TLS_CERT",
    key: "ORDER_SERVICE_TLS_KEY",
    client_ca: "ORDER_SERVICE_TLS_CLIENT_CA",
};

/// Shortest idempotency key retention the contract allows.
const MIN_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl ServeArgs {
    /// Checks every setting and loads the tokens file.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let positive = |setting: &'static str, value: usize| {
            if value == 0 {
                Err(ConfigError::OutOfRange {
                    setting,
                    problem: "must be at least 1".into(),
                })
            } else {
                Ok(value)
            }
        };
        let mut database = parse_database_url(&self.database_url)?;
        if let Database::Postgres(postgres) = &mut database {
            postgres.pool_size = positive("ORDER_SERVICE_PG_POOL_SIZE", self.pg_pool_size)?;
            if self.pg_connect_timeout.is_zero() || self.pg_statement_timeout.is_zero() {
                return Err(ConfigError::OutOfRange {
                    setting: "ORDER_SERVICE_PG_CONNECT_TIMEOUT / ORDER_SERVICE_PG_STATEMENT_TIMEOUT",
                    problem: "must be longer than zero".into(),
                });
            }
            postgres.connect_timeout = self.pg_connect_timeout;
            postgres.statement_timeout = self.pg_statement_timeout;
        }
        let (tokens, dev_token) = match (&self.tokens_file, self.dev) {
            (Some(path), _) => (TokenSet::load(path)?, None),
            (None, true) => {
                let (tokens, token) = TokenSet::development();
                (tokens, Some(token))
            }
            (None, false) => return Err(ConfigError::NoTokens),
        };
        if self.idempotency_retention < MIN_IDEMPOTENCY_RETENTION {
            return Err(ConfigError::OutOfRange {
                setting: "ORDER_SERVICE_IDEMPOTENCY_RETENTION",
                problem: "must be at least 24h: the contract keeps idempotency keys a day".into(),
            });
        }
        if self.max_deadline.is_zero() || self.keepalive_interval.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "ORDER_SERVICE_MAX_DEADLINE / ORDER_SERVICE_KEEPALIVE_INTERVAL",
                problem: "must be longer than zero".into(),
            });
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "ORDER_SERVICE_HANDSHAKE_TIMEOUT",
                problem: "must be longer than zero".into(),
            });
        }
        if self.wal_limit_bytes == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "ORDER_SERVICE_WAL_LIMIT_BYTES",
                problem: "must be at least 1".into(),
            });
        }
        if self.tls_reload_interval.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "ORDER_SERVICE_TLS_RELOAD_INTERVAL",
                problem: "must be longer than zero".into(),
            });
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert,
                    key,
                    client_ca: self.tls_client_ca,
                    alpn: order_status_tls::ALPN_H2,
                    settings: TLS_SETTING_NAMES,
                };
                Some(TlsSettings {
                    config: order_status_tls::load(&files)?,
                    files,
                    reload_interval: self.tls_reload_interval,
                })
            }
            _ => None,
        };
        let webhooks = WebhookSettings {
            allowed_networks: AllowedNetworks::parse(&self.webhook_allow_networks).map_err(
                |problem| ConfigError::OutOfRange {
                    setting: "ORDER_SERVICE_WEBHOOK_ALLOW_NETWORKS",
                    problem,
                },
            )?,
            attempt_timeout: nonzero(
                "ORDER_SERVICE_WEBHOOK_ATTEMPT_TIMEOUT",
                self.webhook_attempt_timeout,
            )?,
            schedule: RetrySchedule::parse(&self.webhook_retry_schedule).map_err(|problem| {
                ConfigError::OutOfRange {
                    setting: "ORDER_SERVICE_WEBHOOK_RETRY_SCHEDULE",
                    problem,
                }
            })?,
            lease: nonzero("ORDER_SERVICE_WEBHOOK_LEASE", self.webhook_lease)?,
            secrets: match &self.webhook_secrets_key_file {
                Some(path) => SecretBox::from_key_file(path)?,
                None => SecretBox::plain(),
            },
        };
        Ok(Settings {
            addr: self.addr,
            database,
            metrics_addr: self.metrics_addr,
            tokens,
            dev_token,
            shutdown_grace: self.shutdown_grace,
            max_deadline: self.max_deadline,
            max_concurrent_calls: positive(
                "ORDER_SERVICE_MAX_CONCURRENT_CALLS",
                self.max_concurrent_calls,
            )?,
            max_watchers: positive("ORDER_SERVICE_MAX_WATCHERS", self.max_watchers)?,
            max_message_bytes: positive("ORDER_SERVICE_MAX_MESSAGE_BYTES", self.max_message_bytes)?,
            store: StoreOptions {
                retention: Retention {
                    events: self.event_retention,
                    idempotency_keys: self.idempotency_retention,
                },
                live_buffer: positive("ORDER_SERVICE_WATCH_BUFFER", self.watch_buffer)?,
            },
            keepalive_interval: self.keepalive_interval,
            handshake_timeout: self.handshake_timeout,
            max_connections: positive("ORDER_SERVICE_MAX_CONNECTIONS", self.max_connections)?,
            wal_limit_bytes: self.wal_limit_bytes,
            tls,
            webhooks,
        })
    }
}

fn nonzero(setting: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::OutOfRange {
            setting,
            problem: "must be longer than zero".into(),
        });
    }
    Ok(value)
}

fn parse_database_url(url: &str) -> Result<Database, ConfigError> {
    let problem = |problem| ConfigError::DatabaseUrl {
        url: redact_password(url),
        problem,
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(problem(
                "names no file; use sqlite://PATH, e.g. sqlite://orders.db",
            ));
        }
        if path.contains('?') {
            return Err(problem("takes no query parameters; use sqlite://PATH"));
        }
        return Ok(Database::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let config: tokio_postgres::Config =
            url.parse().map_err(|source| ConfigError::PostgresUrl {
                url: redact_password(url),
                source,
            })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(problem(
                "names no server; give a host (postgres://HOST/DATABASE) or a socket directory \
                 (?host=/run/postgresql)",
            ));
        }
        return Ok(Database::Postgres(Box::new(PostgresSettings {
            config,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        })));
    }
    Err(problem(
        "must start with sqlite://, postgres:// or postgresql://",
    ))
}

/// The URL with the password of its user part (and of a `password=` parameter) replaced by
/// `***`, for messages and logs.
fn redact_password(url: &str) -> String {
    let mut redacted = url.to_owned();
    if let Some(scheme_end) = redacted.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = redacted[authority_start..]
            .find(['/', '?'])
            .map_or(redacted.len(), |end| authority_start + end);
        if let Some(at) = redacted[authority_start..authority_end].rfind('@') {
            let user_info = &redacted[authority_start..authority_start + at];
            if let Some(colon) = user_info.find(':') {
                redacted.replace_range(authority_start + colon + 1..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = redacted.find('?') {
        let (head, query) = redacted.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        redacted = format!("{head}{}", query.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["order-service"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().serve.into_settings()
    }

    #[test]
    fn database_urls_name_a_sqlite_file() {
        assert_eq!(
            parse_database_url("sqlite://orders.db").unwrap(),
            Database::Sqlite("orders.db".into())
        );
        assert_eq!(
            parse_database_url("sqlite:///data/orders.db").unwrap(),
            Database::Sqlite("/data/orders.db".into())
        );
        for bad in [
            "sqlite://",
            "mysql://x",
            "orders.db",
            "postgres://u:secret@h/db?sslmode=maybe",
        ] {
            let error = parse_database_url(bad).unwrap_err();
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }

    #[test]
    fn postgres_urls_take_the_libpq_forms() {
        let settings = |url: &str| match parse_database_url(url).unwrap() {
            Database::Postgres(settings) => settings,
            other => panic!("{other:?}"),
        };
        let tcp = settings("postgres://app:pw@db.example:6543/orders?sslmode=require");
        assert_eq!(
            tcp.config.get_hosts(),
            [tokio_postgres::config::Host::Tcp("db.example".into())]
        );
        assert_eq!(tcp.config.get_ports(), [6543]);
        assert_eq!(tcp.config.get_dbname(), Some("orders"));
        assert_eq!(tcp.config.get_user(), Some("app"));
        assert_eq!(
            tcp.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert!(!format!("{tcp:?}").contains("pw"));
        let socket = settings("postgresql://postgres@%2Ftmp%2Fpg.1/postgres");
        assert_eq!(
            socket.config.get_hosts(),
            [tokio_postgres::config::Host::Unix("/tmp/pg.1".into())]
        );
        let query_host = settings("postgresql:///orders?host=/run/postgresql&user=app");
        assert_eq!(
            query_host.config.get_hosts(),
            [tokio_postgres::config::Host::Unix("/run/postgresql".into())]
        );
        assert!(parse_database_url("postgres:///orders").is_err());
    }

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            redact_password("postgres://app:s3cret@h:5432/db?sslmode=disable&password=x"),
            "postgres://app:***@h:5432/db?sslmode=disable&password=***"
        );
        assert_eq!(
            redact_password("postgres://app@h/db"),
            "postgres://app@h/db"
        );
    }

    #[test]
    fn postgres_flags_reach_the_store_settings() {
        let settings = args(&[
            "--dev",
            "--database-url",
            "postgres://h/db",
            "--pg-pool-size",
            "4",
            "--pg-statement-timeout",
            "2s",
        ])
        .unwrap();
        let Database::Postgres(postgres) = settings.database else {
            panic!("{:?}", settings.database)
        };
        assert_eq!(postgres.pool_size, 4);
        assert_eq!(postgres.statement_timeout, Duration::from_secs(2));
        assert_eq!(postgres.connect_timeout, Duration::from_secs(5));
        let error = args(&[
            "--dev",
            "--database-url",
            "postgres://h/db",
            "--pg-pool-size",
            "0",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("PG_POOL_SIZE"), "{error}");
    }

    #[test]
    fn refuses_to_start_without_tokens_unless_in_development_mode() {
        assert!(matches!(args(&[]), Err(ConfigError::NoTokens)));
        let dev = args(&["--dev"]).unwrap();
        assert!(dev.dev_token.is_some());
        assert!(
            Cli::try_parse_from(["order-service", "--dev", "--tokens-file", "x.toml"]).is_err()
        );
    }

    #[test]
    fn a_zero_handshake_timeout_or_connection_cap_is_refused() {
        let error = args(&["--dev", "--handshake-timeout", "0s"]).unwrap_err();
        assert!(error.to_string().contains("HANDSHAKE_TIMEOUT"), "{error}");
        let error = args(&["--dev", "--max-connections", "0"]).unwrap_err();
        assert!(error.to_string().contains("MAX_CONNECTIONS"), "{error}");
    }

    #[test]
    fn a_zero_wal_limit_is_refused() {
        let error = args(&["--dev", "--wal-limit-bytes", "0"]).unwrap_err();
        assert!(
            error.to_string().contains("ORDER_SERVICE_WAL_LIMIT_BYTES"),
            "{error}"
        );
        assert_eq!(
            args(&["--dev"]).unwrap().wal_limit_bytes,
            crate::store::DEFAULT_WAL_LIMIT_BYTES
        );
    }

    #[test]
    fn short_idempotency_retention_is_refused() {
        let error = args(&["--dev", "--idempotency-retention", "1h"]).unwrap_err();
        assert!(error.to_string().contains("24h"), "{error}");
    }
}
