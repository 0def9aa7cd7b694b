//! Command-line arguments (clap), each global option also settable by its `STATUS_CLIENT_*`
//! environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use order_status_webhooks::Secret;
use orders_proto::v1::{LineItem, OrderStatus};

use crate::order_status::parse_order_status;
use crate::settings::{self, EndpointUrl};

/// Talk to order-service: get, list, create, update and watch orders, serve them over HTTP,
/// manage webhook endpoints, or receive webhook deliveries.
///
/// Exit status: 0 on success; 1 for a local error (I/O); 2 for bad usage or settings; for a
/// gRPC failure 10 plus the gRPC code number (e.g. 15 NOT_FOUND, 13 INVALID_ARGUMENT,
/// 14 DEADLINE_EXCEEDED, 24 UNAVAILABLE, 26 UNAUTHENTICATED), with the code name on stderr.
#[derive(Debug, Parser)]
#[command(name = "status-client", version, propagate_version = true)]
pub struct Cli {
    /// Options shared by every subcommand.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether the command ends on its own once its calls are answered (`get`, `list`,
    /// `create`, `update`, the `webhooks` calls), rather than running until stopped (`watch`,
    /// `serve`, `webhooks listen`).
    pub fn exits_when_done(&self) -> bool {
        match &self.command {
            Command::Call(command) => !matches!(command, CallCommand::Watch { .. }),
            Command::Webhooks { command } => !matches!(command, WebhooksCommand::Listen(_)),
            Command::Serve { .. } => false,
        }
    }
}

/// Options shared by every subcommand.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// order-service URL; a comma-separated list for several replicas; https:// uses TLS.
    #[arg(
        long,
        global = true,
        env = "STATUS_CLIENT_ENDPOINT",
        default_value = settings::DEFAULT_ENDPOINT,
        value_parser = parse_endpoints,
    )]
    pub endpoint: Endpoints,
    /// Bearer token sent to order-service (not used by `serve`, which passes its callers' on).
    #[arg(
        long,
        global = true,
        env = "STATUS_CLIENT_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// For https:// endpoints: a PEM file of the CA certificate(s) to trust instead of the
    /// system's roots.
    #[arg(
        long,
        global = true,
        env = "STATUS_CLIENT_CA_CERT",
        value_name = "PATH"
    )]
    pub ca_cert: Option<std::path::PathBuf>,
    /// For https:// endpoints that require mutual TLS: a PEM file of the client certificate
    /// (chain) to present. Needs --client-key.
    #[arg(
        long,
        global = true,
        env = "STATUS_CLIENT_CLIENT_CERT",
        value_name = "PATH",
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(
        long,
        global = true,
        env = "STATUS_CLIENT_CLIENT_KEY",
        value_name = "PATH",
        requires = "client_cert"
    )]
    pub client_key: Option<std::path::PathBuf>,
    /// Deadline of one call, all retries included (e.g. 2s, 500ms); in `serve`, the longest a
    /// request may take.
    #[arg(long, global = true, env = "STATUS_CLIENT_TIMEOUT", default_value = "5s", value_parser = settings::parse_timeout)]
    pub timeout: Duration,
    /// How long opening one connection to one replica may take before the call tries another
    /// (kept well under the deadline, so a replica that stopped answering costs one attempt).
    #[arg(long, global = true, env = "STATUS_CLIENT_CONNECT_TIMEOUT", default_value = "1s", value_parser = settings::parse_timeout)]
    pub connect_timeout: Duration,
    /// Output format: readable text, or one proto3-JSON object per line.
    #[arg(long, global = true, value_enum, env = "STATUS_CLIENT_OUTPUT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people at a terminal.
    Text,
    /// One JSON object per line in the proto3 JSON mapping, for scripts.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The subcommands that make calls and print their results.
    #[command(flatten)]
    Call(CallCommand),
    /// Run the HTTP/JSON client service in front of order-service.
    Serve {
        /// Address to listen on.
        #[arg(
            long,
            env = "STATUS_CLIENT_HTTP_ADDR",
            default_value = "127.0.0.1:8080"
        )]
        http_addr: SocketAddr,
        /// Connection and stream limits of the HTTP service.
        #[command(flatten)]
        limits: ServeLimitArgs,
        /// HTTPS instead of HTTP.
        #[command(flatten)]
        tls: ServeTlsArgs,
    },
    /// Manage webhook endpoints (orders.v1.WebhookService; the token needs scope
    /// webhooks.admin), or receive and verify deliveries (`webhooks listen`).
    Webhooks {
        /// What to do.
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

/// The `webhooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint; prints it and its signing secret, which is shown only this once.
    Create {
        /// Where events are POSTed: https://, or http:// for hosts inside the service's
        /// allowed networks.
        #[arg(long)]
        url: String,
        /// Deliver only this event type (order.created, order.status_changed); repeat for
        /// more; none: all.
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
        /// Free text for people.
        #[arg(long, default_value = "")]
        description: String,
        /// Idempotency key (default: a new one, reused on every retry of this call).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Print one endpoint.
    Get {
        /// The endpoint's id.
        id: String,
    },
    /// Print every endpoint, oldest first (pages through all of them).
    List {
        /// Endpoints fetched per call (0: the server's default).
        #[arg(long, default_value_t = 0)]
        page_size: i32,
    },
    /// Change an endpoint; what is not given stays as it is. Enabling resumes delivery from
    /// where it stopped.
    Update {
        /// The endpoint's id.
        id: String,
        /// A new URL.
        #[arg(long)]
        url: Option<String>,
        /// Resume deliveries.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop deliveries (events keep accumulating for when it is enabled again).
        #[arg(long)]
        disable: bool,
        /// New event types (repeat for more).
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove an endpoint and stop its deliveries.
    Delete {
        /// The endpoint's id.
        id: String,
    },
    /// Give an endpoint a new signing secret (printed once); the old one keeps signing beside
    /// it for 24 hours, so receivers can switch over. Never retried once a server may have
    /// received it.
    RotateSecret {
        /// The endpoint's id.
        id: String,
    },
    /// Print an endpoint's delivery log, newest first: every attempt with its status or
    /// error, latency and next retry.
    Deliveries {
        /// The endpoint's id.
        id: String,
        /// Print at most this many attempts.
        #[arg(long)]
        limit: Option<usize>,
        /// Attempts fetched per call (0: the server's default).
        #[arg(long, default_value_t = 0)]
        page_size: i32,
    },
    /// Deliver an endpoint's events again, from the one after SEQUENCE on, in order.
    Replay {
        /// The endpoint's id.
        id: String,
        /// Redeliver the events after this sequence (0: all retained events).
        #[arg(long, value_name = "SEQUENCE")]
        after: u64,
    },
    /// Receive deliveries over HTTP: verify each (signature, timestamp), answer 401 with the
    /// reason or 2xx, drop repeated webhook-ids, print each verified event as one JSON line
    /// on stdout. Runs until SIGTERM or Ctrl-C.
    Listen(ListenArgs),
}

/// The receiver of `webhooks listen`.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Address to listen on (port 0: any free port; the line "status-client listening on
    /// IP:PORT" on stdout says which).
    #[arg(
        long,
        env = "STATUS_CLIENT_WEBHOOK_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub addr: SocketAddr,
    /// An endpoint's signing secret (whsec_…); repeat for more (the new and the old one
    /// during a rotation). The variable takes a comma-separated list.
    #[arg(
        long = "secret",
        value_name = "WHSEC",
        env = "STATUS_CLIENT_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub secrets: Vec<Secret>,
    /// A file of more secrets, one whsec_… per line; read again whenever it changes, and may
    /// not exist yet when the receiver starts.
    #[arg(long, value_name = "PATH", env = "STATUS_CLIENT_WEBHOOK_SECRET_FILE")]
    pub secret_file: Option<std::path::PathBuf>,
    /// How far a delivery's webhook-timestamp may be from this machine's clock, either way.
    #[arg(long, env = "STATUS_CLIENT_WEBHOOK_TOLERANCE", default_value = "5m", value_parser = settings::parse_timeout)]
    pub tolerance: Duration,
    /// How many recent webhook-ids are remembered to drop repeats.
    #[arg(long, default_value_t = 100_000)]
    pub remember: usize,
    /// The largest body accepted (larger: 413).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
}

impl WebhooksCommand {
    /// The subcommand's name as typed (`create`, `rotate-secret`, …), e.g. for span names.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Get { .. } => "get",
            Self::List { .. } => "list",
            Self::Update { .. } => "update",
            Self::Delete { .. } => "delete",
            Self::RotateSecret { .. } => "rotate-secret",
            Self::Deliveries { .. } => "deliveries",
            Self::Replay { .. } => "replay",
            Self::Listen(_) => "listen",
        }
    }
}

/// The certificate `serve` answers HTTPS with (plain HTTP without one).
#[derive(Debug, Clone, Args)]
pub struct ServeTlsArgs {
    /// PEM certificate chain: serve HTTPS instead of HTTP. Needs --http-tls-key. Read again on
    /// SIGHUP and when the file changes.
    #[arg(
        long,
        env = "STATUS_CLIENT_HTTP_TLS_CERT",
        value_name = "PATH",
        requires = "http_tls_key"
    )]
    pub http_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --http-tls-cert.
    #[arg(
        long,
        env = "STATUS_CLIENT_HTTP_TLS_KEY",
        value_name = "PATH",
        requires = "http_tls_cert"
    )]
    pub http_tls_key: Option<std::path::PathBuf>,
}

/// What `serve` allows one HTTP connection and one caller, so that no caller can hold more
/// than its share of the service.
#[derive(Debug, Clone, Args)]
pub struct ServeLimitArgs {
    /// A connection must deliver a complete request head within this long of opening or of
    /// its previous response, else it is closed (so it also ends idle keep-alive connections).
    #[arg(long, env = "STATUS_CLIENT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = settings::parse_timeout)]
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed (a stalled
    /// upload, a reader that stopped reading). Event streams send a keep-alive every 15 s.
    #[arg(long, env = "STATUS_CLIENT_IDLE_TIMEOUT", default_value = "60s", value_parser = settings::parse_timeout)]
    pub idle_timeout: Duration,
    /// Open HTTP connections at most; further ones are answered 503 and closed.
    #[arg(long, env = "STATUS_CLIENT_MAX_CONNECTIONS", default_value_t = 15_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// The largest request head (all header names and values) accepted; larger is 431.
    #[arg(long, env = "STATUS_CLIENT_MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024))]
    pub max_header_bytes: u32,
    /// Upstream watch streams per order-service connection (kept below order-service's
    /// streams-per-connection limit); more open another connection.
    #[arg(long, env = "STATUS_CLIENT_WATCH_STREAMS_PER_CONNECTION", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_streams_per_connection: u32,
    /// Recent events each shared upstream watch keeps, so that a reconnecting event stream
    /// resumes from them instead of opening its own upstream stream.
    #[arg(long, env = "STATUS_CLIENT_SSE_REPLAY_EVENTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub sse_replay_events: u32,
}

/// The subcommands that make calls and print their results.
#[derive(Debug, Subcommand)]
pub enum CallCommand {
    /// Print one order.
    Get {
        /// The order's id.
        id: String,
    },
    /// Print every order matching the filters, oldest first (pages through all results).
    List {
        /// Only orders with this status (paid, PAID or ORDER_STATUS_PAID).
        #[arg(long, value_parser = parse_order_status)]
        status: Option<OrderStatus>,
        /// Only orders of this customer.
        #[arg(long)]
        customer: Option<String>,
        /// Orders fetched per call (0: the server's default).
        #[arg(long, default_value_t = 0)]
        page_size: i32,
    },
    /// Create an order and print it.
    Create {
        /// The customer's id.
        #[arg(long)]
        customer: String,
        /// ISO 4217 currency code, e.g. EUR.
        #[arg(long)]
        currency: String,
        /// A line item as SKU:QUANTITY:UNIT_PRICE_CENTS; repeat for more items.
        #[arg(long = "item", required = true, value_parser = parse_line_item)]
        items: Vec<LineItem>,
        /// Idempotency key (default: a new one, reused on every retry of this call). Give the
        /// same key again to make a repeated command create nothing new.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Move an order to a new status and print it.
    Update {
        /// The order's id.
        id: String,
        /// The new status (paid, PAID or ORDER_STATUS_PAID).
        #[arg(value_parser = parse_order_status)]
        status: OrderStatus,
        /// Only update if the order is at this version (optimistic concurrency).
        #[arg(long)]
        expected_version: Option<i64>,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
        /// Idempotency key (default: a new one, reused on every retry of this call).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Print order events as they happen, resuming across disconnects, until interrupted.
    /// Fails if no stream can be opened within the timeout.
    Watch {
        /// Only this order's events (the first is its current state).
        id: Option<String>,
        /// Start after this event sequence (replays the stored events after it).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

impl CallCommand {
    /// The subcommand's name as typed (`get`, `list`, …), e.g. for span names.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::List { .. } => "list",
            Self::Create { .. } => "create",
            Self::Update { .. } => "update",
            Self::Watch { .. } => "watch",
        }
    }
}

/// The order-service replicas given on the command line (one comma-separated value).
#[derive(Debug, Clone)]
pub struct Endpoints(pub Vec<EndpointUrl>);

fn parse_endpoints(list: &str) -> Result<Endpoints, settings::SettingsError> {
    settings::parse_endpoint_list(list).map(Endpoints)
}

/// Parses `SKU:QUANTITY:UNIT_PRICE_CENTS`; the SKU may itself contain colons.
pub(crate) fn parse_line_item(s: &str) -> Result<LineItem, String> {
    let mut parts = s.rsplitn(3, ':');
    let (Some(price), Some(quantity), Some(sku)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("expected SKU:QUANTITY:UNIT_PRICE_CENTS, got {s:?}"));
    };
    let quantity = quantity
        .parse()
        .map_err(|_| format!("quantity {quantity:?} is not a whole number"))?;
    let unit_price_cents = price
        .parse()
        .map_err(|_| format!("unit price {price:?} is not a whole number of cents"))?;
    Ok(LineItem {
        sku: sku.to_owned(),
        quantity,
        unit_price_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoint_lists_parse() {
        let cli = Cli::try_parse_from([
            "status-client",
            "--endpoint",
            "http://a:1,http://b:2",
            "get",
            "x",
        ])
        .unwrap();
        assert_eq!(cli.common.endpoint.0.len(), 2);
        assert!(Cli::try_parse_from(["status-client", "--endpoint", "a:1", "get", "x"]).is_err());
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_other_way_round() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["status-client"];
            argv.extend_from_slice(args);
            argv.extend_from_slice(&["get", "x"]);
            Cli::try_parse_from(argv)
        };
        assert!(parse(&["--client-cert", "c.pem"]).is_err());
        assert!(parse(&["--client-key", "c.key"]).is_err());
        let both = parse(&["--client-cert", "c.pem", "--client-key", "c.key"]).unwrap();
        assert!(both.common.client_cert.is_some() && both.common.client_key.is_some());
    }

    #[test]
    fn webhook_commands_parse() {
        let cli = Cli::try_parse_from([
            "status-client",
            "webhooks",
            "update",
            "ep-1",
            "--disable",
            "--event-type",
            "order.created",
        ])
        .unwrap();
        assert!(cli.exits_when_done());
        let Command::Webhooks {
            command:
                WebhooksCommand::Update {
                    disable,
                    enable,
                    event_types,
                    ..
                },
        } = cli.command
        else {
            panic!("not webhooks update");
        };
        assert!(disable && !enable);
        assert_eq!(event_types, ["order.created"]);
        assert!(
            Cli::try_parse_from([
                "status-client",
                "webhooks",
                "update",
                "ep-1",
                "--enable",
                "--disable"
            ])
            .is_err()
        );
        let secret = Secret::generate().to_string();
        let cli = Cli::try_parse_from([
            "status-client",
            "webhooks",
            "listen",
            "--addr",
            "127.0.0.1:0",
            "--secret",
            &secret,
            "--secret",
            &secret,
        ])
        .unwrap();
        assert!(!cli.exits_when_done());
        let Command::Webhooks {
            command: WebhooksCommand::Listen(args),
        } = cli.command
        else {
            panic!("not webhooks listen");
        };
        assert_eq!(args.secrets.len(), 2);
        assert_eq!(args.tolerance, Duration::from_secs(300));
        assert!(
            Cli::try_parse_from(["status-client", "webhooks", "listen", "--secret", "nope"])
                .is_err()
        );
    }

    #[test]
    fn line_items_parse() {
        let item = parse_line_item("BOOK:2:1250").unwrap();
        assert_eq!(
            (item.sku.as_str(), item.quantity, item.unit_price_cents),
            ("BOOK", 2, 1250)
        );
        assert_eq!(parse_line_item("a:b:1:5").unwrap().sku, "a:b");
        assert!(parse_line_item("BOOK:2").is_err());
        assert!(parse_line_item("BOOK:two:5").is_err());
    }
}
