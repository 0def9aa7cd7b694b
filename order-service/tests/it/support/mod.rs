//! Test harness: a real order-service on 127.0.0.1:0 with its own database (an SQLite file, or
//! a fresh PostgreSQL database: [`Backend`]) and tokens file, in this process (`TestServer`) or
//! as a child process of the real binary (`ServerProcess`).

#![allow(dead_code, unreachable_pub)]

pub mod postgres;

use order_service::config::Cli;
use order_service::observability::Observability;
use order_service::startup::Application;
use order_status_telemetry::{Telemetry, TelemetryConfig};
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Token with both scopes (principal "writer").
pub const WRITER: &str = "writer-token-0123456789";
/// Second token with both scopes (principal "other-writer"): idempotency keys are per principal.
pub const OTHER_WRITER: &str = "other-writer-token-0123456789";
/// Token with orders.read only (principal "reader").
pub const READER: &str = "reader-token-0123456789";
/// Token with webhooks.admin only (principal "hook-admin").
pub const HOOK_ADMIN: &str = "hook-admin-token-0123456789";

/// Writes the tokens file of the three test tokens into `dir`.
pub fn write_tokens_file(dir: &Path) -> PathBuf {
    let sha = |token: &str| hex::encode(Sha256::digest(token.as_bytes()));
    let text = format!(
        "[[token]]\nprincipal = \"writer\"\nscopes = [\"orders.read\", \"orders.write\"]\nsha256 = \"{}\"\n\n\
         [[token]]\nprincipal = \"other-writer\"\nscopes = [\"orders.read\", \"orders.write\"]\nsha256 = \"{}\"\n\n\
         [[token]]\nprincipal = \"reader\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n\n\
         [[token]]\nprincipal = \"hook-admin\"\nscopes = [\"webhooks.admin\"]\nsha256 = \"{}\"\n",
        sha(WRITER),
        sha(OTHER_WRITER),
        sha(READER),
        sha(HOOK_ADMIN)
    );
    let path = dir.join("tokens.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Where a test's orders are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server of `ORDER_STATUS_TEST_POSTGRES`.
    Postgres,
}

impl Backend {
    /// A new, empty database of this backend; it is removed when the handle drops.
    pub async fn database(self) -> TestDatabase {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("orders.db").display());
                TestDatabase {
                    url,
                    _keep: Keep::Sqlite(dir),
                }
            }
            Backend::Postgres => {
                let database = postgres::PgDatabase::create().await;
                TestDatabase {
                    url: database.url.clone(),
                    _keep: Keep::Postgres(database),
                }
            }
        }
    }
}

/// A database for one test, by URL (`--database-url`); it outlives the servers started on it.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    _keep: Keep,
}

#[derive(Debug)]
enum Keep {
    Sqlite(TempDir),
    Postgres(postgres::PgDatabase),
}

/// An order-service running inside the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when started with `--metrics-addr`.
    pub metrics_addr: Option<SocketAddr>,
    pub dir: TempDir,
    /// This server's own metrics pipeline (nothing global, nothing exported).
    pub telemetry: Telemetry,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> TestServer {
        TestServer::start_with(&[]).await
    }

    /// Starts a server with extra command-line flags.
    pub async fn start_with(flags: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        TestServer::start_in(dir, flags).await
    }

    /// Starts a server on the database and tokens in `dir`.
    pub async fn start_in(dir: TempDir, flags: &[&str]) -> TestServer {
        let tokens = write_tokens_file(dir.path());
        let database = sqlite_url(dir.path());
        TestServer::start_with_tokens_at(dir, &tokens, &database, flags).await
    }

    /// Starts a server on `database` (the test keeps it: several servers, one after the other
    /// or at once, may share it) with extra command-line flags.
    pub async fn start_on(database: &TestDatabase, flags: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let tokens = write_tokens_file(dir.path());
        TestServer::start_with_tokens_at(dir, &tokens, &database.url, flags).await
    }

    /// Starts a server whose tokens file has the TOML text `tokens` (instead of the three test
    /// tokens), with extra command-line flags.
    pub async fn start_with_tokens(tokens: &str, flags: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, tokens).unwrap();
        let database = sqlite_url(dir.path());
        TestServer::start_with_tokens_at(dir, &path, &database, flags).await
    }

    /// Starts a server on the database at `database_url` (e.g. a PostgreSQL database shared
    /// with other test servers), with the test tokens and extra flags.
    pub async fn start_on_database(database_url: &str, flags: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let tokens = write_tokens_file(dir.path());
        TestServer::start_with_tokens_at(dir, &tokens, database_url, flags).await
    }

    /// Starts a server on `database` with the tokens file at `tokens`; `dir` lives as long as
    /// the server.
    async fn start_with_tokens_at(
        dir: TempDir,
        tokens: &Path,
        database: &str,
        flags: &[&str],
    ) -> TestServer {
        let mut argv = vec![
            "order-service".to_owned(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--database-url".into(),
            database.to_owned(),
            "--tokens-file".into(),
            tokens.display().to_string(),
        ];
        argv.extend(flags.iter().map(|f| (*f).to_owned()));
        let settings = <Cli as clap::Parser>::try_parse_from(argv)
            .unwrap()
            .serve
            .into_settings()
            .unwrap();
        let telemetry = Telemetry::build(&TelemetryConfig::new("order-service-test")).unwrap();
        let app = Application::build(settings, Observability::of(&telemetry))
            .await
            .unwrap();
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            metrics_addr,
            dir,
            telemetry,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The SQLite file of a server started on the database in its directory (not by
    /// [`TestServer::start_on`]).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("orders.db")
    }

    pub async fn client(&self) -> OrderServiceClient<Channel> {
        client(self.addr).await
    }

    pub async fn channel(&self) -> Channel {
        channel(self.addr).await
    }

    /// Begins a graceful shutdown and returns without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits until the server stopped; the data directory stays.
    pub async fn stop(mut self) -> TempDir {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.dir
    }
}

/// `sqlite://` URL of the file `orders.db` in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("orders.db").display())
}

pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn client(addr: SocketAddr) -> OrderServiceClient<Channel> {
    OrderServiceClient::new(channel(addr).await)
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn item(sku: &str, quantity: u32, unit_price_cents: i64) -> pb::LineItem {
    pb::LineItem {
        sku: sku.into(),
        quantity,
        unit_price_cents,
    }
}

/// A valid create request for `customer` with one item.
pub fn new_order(customer: &str, request_id: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        request_id: request_id.into(),
        customer_id: customer.into(),
        items: vec![item("SKU-1", 2, 1250)],
        currency: "EUR".into(),
    }
}

pub async fn create(client: &mut OrderServiceClient<Channel>, customer: &str) -> pb::Order {
    let request_id = format!("create-{}", uuid_like());
    client
        .create_order(authed(new_order(customer, &request_id), WRITER))
        .await
        .unwrap()
        .into_inner()
}

pub async fn set_status(
    client: &mut OrderServiceClient<Channel>,
    order_id: &str,
    status: pb::OrderStatus,
) -> Result<pb::Order, Status> {
    client
        .update_order_status(authed(
            pb::UpdateOrderStatusRequest {
                order_id: order_id.into(),
                status: status as i32,
                ..Default::default()
            },
            WRITER,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// A unique string for request ids.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `ErrorInfo` reason of a status.
pub fn reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "orders.v1");
    info.reason
}

/// The `BadRequest` field paths of a status, sorted.
pub fn bad_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"))
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    fields.sort();
    fields
}

/// The real `order-service` binary as a child process.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the binary on `addr` (port 0 allowed) with the database and tokens in `dir`, and
    /// waits for its "listening on" line.
    pub fn start(dir: &Path, addr: &str) -> ServerProcess {
        ServerProcess::start_with(dir, addr, &[])
    }

    /// [`ServerProcess::start`] with extra command-line flags.
    pub fn start_with(dir: &Path, addr: &str, flags: &[&str]) -> ServerProcess {
        ServerProcess::start_on(dir, addr, &sqlite_url(dir), flags)
    }

    /// Starts the binary on `addr` (port 0 allowed) with the tokens in `dir`, on the database
    /// at `database` and extra flags, and waits for its "listening on" line.
    pub fn start_on(dir: &Path, addr: &str, database: &str, flags: &[&str]) -> ServerProcess {
        let tokens = write_tokens_file(dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_order-service"))
            .args(["--addr", addr])
            .arg("--tokens-file")
            .arg(&tokens)
            .arg("--database-url")
            .arg(database)
            .args(flags)
            .env_remove("ORDER_SERVICE_DEV")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("order-service exited before it listened")
                .unwrap();
            if let Some(addr) = line.strip_prefix("order-service listening on ") {
                break addr.parse().unwrap();
            }
        };
        ServerProcess { child, addr }
    }

    /// SIGTERM: a graceful shutdown begins; returns without waiting for it (see
    /// [`ServerProcess::wait_exit`]).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// SIGSTOP: freezes it, connections open. Returns once every thread of the process is
    /// stopped (the kernel stops them one by one).
    pub async fn pause(&self) {
        self.signal("STOP");
        let tasks = PathBuf::from(format!("/proc/{}/task", self.child.id()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !all_threads_stopped(&tasks) {
            assert!(
                std::time::Instant::now() < deadline,
                "order-service did not stop after SIGSTOP"
            );
            // Polled, as /proc offers no notification.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// SIGCONT: lets a paused process run again.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "kill -{name} {}: {status}",
            self.child.id()
        );
    }

    /// Waits until the process has exited and returns how.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub async fn client(&self) -> OrderServiceClient<Channel> {
        client(self.addr).await
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether every thread under `/proc/PID/task` is stopped (state `T` or `t`).
fn all_threads_stopped(tasks: &Path) -> bool {
    std::fs::read_dir(tasks).unwrap().all(|task| {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses and may hold spaces.
        matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('T' | 't')
        )
    })
}

/// A client over a bare HTTP/2 connection: unlike a tonic `Channel`, it does not enforce the
/// request's `grpc-timeout` itself, so a test sees what the server answers when it expires.
pub async fn client_without_local_deadline(addr: SocketAddr) -> OrderServiceClient<BareHttp2> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let origin = format!("http://{addr}").parse().unwrap();
    OrderServiceClient::with_origin(BareHttp2(sender), origin)
}

/// See [`client_without_local_deadline`].
#[derive(Clone)]
pub struct BareHttp2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for BareHttp2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, hyper::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}
