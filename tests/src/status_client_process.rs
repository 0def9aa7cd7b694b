//! The `status-client` binary for cross-service tests: one-shot CLI runs with their output and
//! exit status, a long-running `watch`, and `serve` with a small HTTP/1.1 client (plain
//! requests and Server-Sent Event streams) to talk to it.
//!
//! Like the order-service helper, the test runner's `OTEL_EXPORTER_OTLP_*` variables are not
//! passed on; a test sets what it wants with [`StatusClientCli::env`].

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::order_service_process::{TELEMETRY_VARIABLES, workspace_binary};

/// How to run the CLI: the `STATUS_CLIENT_*` variables it gets.
#[derive(Debug, Clone)]
pub struct StatusClientCli {
    endpoint: String,
    token: Option<String>,
    timeout: String,
    env: Vec<(String, String)>,
}

/// What one CLI run did.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status (None when killed by a signal).
    pub status: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
}

impl CliOutput {
    /// Panics, showing stdout and stderr, unless the command exited with status 0.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(
            self.status,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// stdout's lines parsed as JSON (for `--output json`).
    pub fn json_lines(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line:?}")))
            .collect()
    }
}

impl StatusClientCli {
    /// `create --customer CUSTOMER --currency EUR --item BOOK:2:1250 --output json`, which must
    /// succeed; the created order as proto3 JSON.
    pub async fn create_order(&self, customer: &str) -> serde_json::Value {
        let output = self
            .run(&[
                "create",
                "--customer",
                customer,
                "--currency",
                "EUR",
                "--item",
                "BOOK:2:1250",
                "--output",
                "json",
            ])
            .await
            .unwrap();
        output.assert_ok();
        output.json_lines().unwrap().remove(0)
    }

    /// The CLI against `endpoint` (one URL or a comma-separated list) with `token`.
    pub fn new(endpoint: impl Into<String>, token: Option<&str>) -> Self {
        Self {
            endpoint: endpoint.into(),
            token: token.map(str::to_owned),
            timeout: "5s".to_owned(),
            env: Vec::new(),
        }
    }

    /// Sets an extra environment variable of every run (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets `STATUS_CLIENT_TIMEOUT`.
    pub fn timeout(mut self, timeout: &str) -> Self {
        self.timeout = timeout.to_owned();
        self
    }

    fn command(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut command = Command::new(workspace_binary("status-client")?);
        for variable in TELEMETRY_VARIABLES {
            command.env_remove(variable);
        }
        command
            .args(args)
            .env("STATUS_CLIENT_ENDPOINT", &self.endpoint)
            .env("STATUS_CLIENT_TIMEOUT", &self.timeout)
            .env_remove("STATUS_CLIENT_OUTPUT")
            .env_remove("STATUS_CLIENT_HTTP_ADDR")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn,status_client=info")
            .stdin(Stdio::null())
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .kill_on_drop(true);
        match &self.token {
            Some(token) => command.env("STATUS_CLIENT_TOKEN", token),
            None => command.env_remove("STATUS_CLIENT_TOKEN"),
        };
        Ok(command)
    }

    /// Runs `status-client ARGS…` to completion.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let output = self
            .command(args)?
            .output()
            .await
            .context("running status-client")?;
        Ok(CliOutput {
            status: output.status.code(),
            stdout: String::from_utf8(output.stdout)?,
            stderr: String::from_utf8(output.stderr)?,
        })
    }

    /// Starts `status-client ARGS…` (e.g. `watch`) and returns it with its stdout lines.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<(Child, Lines<BufReader<ChildStdout>>)> {
        let mut child = self
            .command(args)?
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting status-client")?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok((child, BufReader::new(stdout).lines()))
    }

    /// Like [`StatusClientCli::spawn`], with its stderr (the log) as lines too, for a test
    /// that waits for what it logs (e.g. a watch being open, an attempt being retried).
    pub fn spawn_logging(&self, args: &[&str]) -> anyhow::Result<RunningCli> {
        let mut child = self
            .command(args)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting status-client")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        Ok(RunningCli {
            child,
            stdout: BufReader::new(stdout).lines(),
            stderr: BufReader::new(stderr).lines(),
        })
    }
}

/// A `status-client` run in progress, with its output as lines.
#[derive(Debug)]
pub struct RunningCli {
    /// The process (killed when dropped).
    pub child: Child,
    /// What it prints.
    pub stdout: Lines<BufReader<ChildStdout>>,
    /// What it logs.
    pub stderr: Lines<BufReader<tokio::process::ChildStderr>>,
}

impl RunningCli {
    /// Reads the log until a line containing `text` (which it returns); fails if the log ends
    /// first (the process exited), with what was logged.
    pub async fn logged(&mut self, text: &str) -> anyhow::Result<String> {
        let mut seen = String::new();
        while let Some(line) = self.stderr.next_line().await? {
            if line.contains(text) {
                return Ok(line);
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        bail!("status-client exited without logging {text:?}; it logged:\n{seen}")
    }
}

/// A running `status-client serve`.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServeProcess {
    /// Starts `serve` on a free port in front of `endpoint`; `timeout` is its request deadline.
    pub async fn start(endpoint: &str, timeout: &str) -> anyhow::Result<Self> {
        Self::start_with(StatusClientCli::new(endpoint, None).timeout(timeout)).await
    }

    /// Starts `serve` on a free port with the settings of `cli` (its endpoint, timeout and
    /// extra environment; the token is ignored by `serve`).
    pub async fn start_with(cli: StatusClientCli) -> anyhow::Result<Self> {
        Self::spawn_serve(cli, Stdio::inherit()).await
    }

    /// Like [`ServeProcess::start_with`], writing its log (stderr) to `log` instead of the
    /// test's own stderr, for a test that reads it.
    pub async fn start_logging_to(
        cli: StatusClientCli,
        log: std::fs::File,
    ) -> anyhow::Result<Self> {
        Self::spawn_serve(cli, Stdio::from(log)).await
    }

    async fn spawn_serve(cli: StatusClientCli, stderr: Stdio) -> anyhow::Result<Self> {
        let mut child = cli
            .command(&["serve"])?
            .env("STATUS_CLIENT_HTTP_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("starting status-client serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next_line().await? else {
                bail!(
                    "status-client serve exited ({:?}) before listening",
                    child.wait().await?
                );
            };
            if let Some(addr) = line.strip_prefix("status-client listening on ") {
                break addr.trim().parse()?;
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends SIGHUP: read the HTTPS certificate again.
    pub fn reload(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("not running")?;
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -HUP failed");
        }
        Ok(())
    }

    /// Sends SIGTERM and returns the exit status once it has stopped.
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("not running")?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(self.child.wait().await?)
    }
}

/// A response read to the end.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body text.
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("body is not JSON: {:?}", self.body))
    }
}

/// Sends one HTTP/1.1 request on a new connection; `headers` are `(name, value)` pairs.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let response = send(addr, method, path, headers, body).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8(body.to_vec())?,
    })
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<hyper::Response<Incoming>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender
        .send_request(http1_request(addr, method, path, headers, body)?)
        .await?)
}

/// An HTTP/1.1 request to the gateway at `addr`: `host`, the given headers, and a JSON body
/// when there is one.
pub fn http1_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(request.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))?)
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` field.
    pub id: Option<String>,
    /// `event:` field (`message` when absent).
    pub event: String,
    /// `data:` lines joined with newlines.
    pub data: String,
}

/// An open SSE response, read event by event.
#[derive(Debug)]
pub struct SseStream {
    /// Status code of the response.
    pub status: u16,
    body: Incoming,
    buffer: String,
    /// What a browser's `EventSource.lastEventId` would be: the last `id:` of any block
    /// dispatched so far, with data or without.
    last_event_id: Option<String>,
}

impl SseStream {
    /// Opens `GET path` with `headers` (e.g. `Last-Event-ID`).
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut all = vec![("accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let response = send(addr, "GET", path, &all, None).await?;
        Ok(Self {
            status: response.status().as_u16(),
            body: response.into_body(),
            buffer: String::new(),
            last_event_id: None,
        })
    }

    /// The next event (comments and keep-alives skipped); `None` when the stream ended.
    /// Fails if none arrives within `within`.
    pub async fn next_event(&mut self, within: Duration) -> anyhow::Result<Option<SseEvent>> {
        tokio::time::timeout(within, self.next_event_inner())
            .await
            .context("no server-sent event in time")?
    }

    async fn next_event_inner(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            match self.next_block().await? {
                None => return Ok(None),
                Some(block) => {
                    if let Some(event) = parse_event(&block) {
                        return Ok(Some(event));
                    }
                }
            }
        }
    }

    /// Reads up to the next block that carries an `id:` (an event, or an `id:` alone) and
    /// returns the last event ID after it, as a browser's EventSource keeps it; `None` when
    /// the stream ended first. Fails if none arrives within `within`.
    pub async fn next_last_event_id(&mut self, within: Duration) -> anyhow::Result<Option<String>> {
        tokio::time::timeout(within, async {
            loop {
                let Some(block) = self.next_block().await? else {
                    return Ok(None);
                };
                if block.lines().any(|line| line.starts_with("id:")) {
                    return Ok(self.last_event_id.clone());
                }
            }
        })
        .await
        .context("no server-sent id in time")?
    }

    /// The last event ID so far (see [`SseStream::next_last_event_id`]).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The next complete block (up to a blank line), its `id:` noted as an EventSource does.
    async fn next_block(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        self.last_event_id = Some(id.strip_prefix(' ').unwrap_or(id).to_owned());
                    }
                }
                return Ok(Some(block));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buffer.push_str(std::str::from_utf8(&data)?);
                    }
                }
            }
        }
    }
}

fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = SseEvent {
        id: None,
        event: "message".to_owned(),
        data: String::new(),
    };
    let mut has_data = false;
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = value.to_owned(),
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    has_data.then_some(event)
}
