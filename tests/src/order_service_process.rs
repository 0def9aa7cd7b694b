//! A real `order-service` process for cross-service tests: its own SQLite file and tokens file
//! in a temporary directory, port 0, and the controls a test needs to misbehave it: stop and
//! start again on the same address and database, kill, pause (SIGSTOP) and resume.
//!
//! It exports no telemetry and serves no `/metrics` unless a test asks for it with
//! [`OrderServiceProcess::start_with_env`] (the test runner's own `OTEL_EXPORTER_OTLP_*` and
//! `ORDER_SERVICE_METRICS_ADDR` are not passed on).
//!
//! The binary is the workspace's `target/<profile>/order-service`; build it first
//! (`cargo build -p order-service`; `cargo test --workspace` does it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A token with scopes `orders.read` and `orders.write` (principal `test-writer`).
pub const WRITER_TOKEN: &str = "writer-token-for-tests";
/// A token with scope `orders.read` only (principal `test-reader`).
pub const READER_TOKEN: &str = "reader-token-for-tests";
/// A token with scope `orders.read` whose principal (`test-rate-limited`) may make one call
/// per 100 s: its second call is refused with `RATE_LIMITED` and a `RetryInfo` of up to 100 s.
pub const RATE_LIMITED_TOKEN: &str = "rate-limited-token-for-tests";
/// A token with scope `orders.read` whose principal (`test-paced`) may make one call per second,
/// with no burst: calls made back to back are refused with a `RetryInfo` of up to 1 s.
pub const PACED_TOKEN: &str = "paced-token-for-tests";

/// A running (or stopped, or paused) order-service.
#[derive(Debug)]
pub struct OrderServiceProcess {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Option<Child>,
    /// Extra environment of every start (and restart).
    env: Vec<(String, String)>,
    /// `https` when the environment configures TLS, else `http`.
    scheme: &'static str,
}

/// Variables of the test runner that would change what a started process exports or serves;
/// removed so that only what a test passes explicitly applies.
pub(crate) const TELEMETRY_VARIABLES: [&str; 4] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

impl OrderServiceProcess {
    /// Starts order-service on a free port with a fresh database.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_env(&[]).await
    }

    /// Starts it like [`OrderServiceProcess::start`] with extra environment variables (also
    /// on every restart), e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_BSP_SCHEDULE_DELAY`,
    /// `ORDER_SERVICE_METRICS_ADDR`.
    pub async fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with_tokens_and_env("", env).await
    }

    /// Starts it like [`OrderServiceProcess::start_with_env`], with `extra_tokens` appended to
    /// the tokens file (e.g. `[[client_cert]]` entries). With `ORDER_SERVICE_TLS_CERT` in `env`
    /// its [`OrderServiceProcess::url`] is `https://`.
    pub async fn start_with_tokens_and_env(
        extra_tokens: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        write_tokens_file(&dir.path().join("tokens.toml"), extra_tokens)?;
        let mut service = Self {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            env: env
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            scheme: if env
                .iter()
                .any(|(name, _)| *name == "ORDER_SERVICE_TLS_CERT")
            {
                "https"
            } else {
                "http"
            },
        };
        service.spawn().await?;
        Ok(service)
    }

    /// The address it listens on (the same across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, for `STATUS_CLIENT_ENDPOINT` (`https://` when it serves TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Sends it SIGHUP: read the TLS files again.
    pub fn reload(&self) -> anyhow::Result<()> {
        signal(self.pid()?, "HUP")
    }

    /// Process id of the running server.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .context("order-service is not running")
    }

    /// Stops it gracefully (SIGTERM) and waits for it to exit; it must exit with status 0.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let pid = self.pid()?;
        signal(pid, "TERM")?;
        let mut child = self.child.take().context("not running")?;
        let status = child.wait().await?;
        if !status.success() {
            bail!(
                "order-service exited with {status} after SIGTERM; log:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// Kills it (SIGKILL): no goodbye to its clients.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("not running")?;
        child.kill().await?;
        Ok(())
    }

    /// Starts it again on the same address with the same database.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("order-service is still running");
        }
        self.spawn().await
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing answers. Returns once every
    /// thread of the process is stopped: the kernel stops them one by one, and on a busy
    /// machine a worker could otherwise still answer a request sent right after the signal.
    pub async fn pause(&self) -> anyhow::Result<()> {
        let pid = self.pid()?;
        signal(pid, "STOP")?;
        let tasks = PathBuf::from(format!("/proc/{pid}/task"));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !all_threads_stopped(&tasks)? {
            if tokio::time::Instant::now() > deadline {
                bail!("order-service (pid {pid}) did not stop after SIGSTOP");
            }
            // Polled, as /proc offers no notification; a millisecond keeps the CPU free for the
            // threads that are stopping.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        signal(self.pid()?, "CONT")
    }

    /// Everything it logged so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("order-service.log")).unwrap_or_default()
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = workspace_binary("order-service")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("order-service.log"))?;
        let database = format!("sqlite://{}", self.dir.path().join("orders.db").display());
        let mut command = Command::new(&binary);
        for variable in TELEMETRY_VARIABLES
            .iter()
            .chain(&["ORDER_SERVICE_METRICS_ADDR"])
        {
            command.env_remove(variable);
        }
        let mut child = command
            .arg("--addr")
            .arg(self.addr.to_string())
            .arg("--database-url")
            .arg(database)
            .arg("--tokens-file")
            .arg(self.dir.path().join("tokens.toml"))
            .arg("--shutdown-grace")
            .arg("2s")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("ORDER_SERVICE_DEV")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next_line().await? else {
                let status = child.wait().await?;
                bail!(
                    "order-service exited ({status}) before listening; log:\n{}",
                    self.log()
                );
            };
            if let Some(addr) = line.strip_prefix("order-service listening on ") {
                break addr.trim().parse::<SocketAddr>()?;
            }
        };
        // Keep reading so that a full pipe never blocks the server.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }
}

/// Whether every thread under `/proc/PID/task` is in state `T` (stopped).
fn all_threads_stopped(tasks: &Path) -> anyhow::Result<bool> {
    for task in std::fs::read_dir(tasks).context("reading /proc task list")? {
        let stat = std::fs::read_to_string(task?.path().join("stat"))?;
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .context("unexpected /proc stat format")?;
        if state != 'T' && state != 't' {
            return Ok(false);
        }
    }
    Ok(true)
}

fn write_tokens_file(path: &Path, extra: &str) -> anyhow::Result<()> {
    let entry = |principal: &str, scopes: &str, token: &str| {
        format!(
            "[[token]]\nprincipal = \"{principal}\"\nscopes = [{scopes}]\nsha256 = \"{}\"\n\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        )
    };
    let text = entry(
        "test-writer",
        "\"orders.read\", \"orders.write\"",
        WRITER_TOKEN,
    ) + &entry("test-reader", "\"orders.read\"", READER_TOKEN)
        + &entry("test-rate-limited", "\"orders.read\"", RATE_LIMITED_TOKEN)
        + "rate_limit = { per_second = 0.01, burst = 1 }\n\n"
        + &entry("test-paced", "\"orders.read\"", PACED_TOKEN)
        + "rate_limit = { per_second = 1, burst = 1 }\n\n"
        + extra;
    std::fs::write(path, text).context("writing the tokens file")
}

/// A local address where nothing listens (a port that was just bound and released), for a
/// replica that refuses connections or a server's extra listener such as `/metrics`.
pub fn unused_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding port 0")?;
    Ok(listener.local_addr()?)
}

/// Sends a signal with `kill(1)`, keeping `unsafe` (libc) out of the tests.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}

/// The path of a workspace binary next to the running test executable's directory
/// (`target/<profile>/deps/test-…` → `target/<profile>/<name>`), or next to the running
/// program itself (a binary of this crate, such as `sse-scale`, in `target/<profile>/`).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if let Some(sibling) = exe.parent().map(|dir| dir.join(name))
        && sibling.exists()
    {
        return Ok(sibling);
    }
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target directory")?;
    let binary = profile_dir.join(name);
    if !binary.exists() {
        bail!(
            "{} not found: build it first (cargo build -p {name}, or cargo test --workspace)",
            binary.display()
        );
    }
    Ok(binary)
}
