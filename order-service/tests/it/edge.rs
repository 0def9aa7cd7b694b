//! The network edge against hostile or careless clients, on the real binary where the process
//! matters (memory, file descriptors, logs): message limits of the open services, memory held by
//! unfinished bodies and given back after, the handshake deadline, the connection cap, accept
//! failures under a low file limit, and requests that do not decode. Raw HTTP/2 (hyper's client)
//! where a tonic client would refuse to send what a hostile one sends.

use crate::support::{WRITER, write_tokens_file};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use orders_proto::reason;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const REFLECTION_V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const CREATE_ORDER: &str = "/orders.v1.OrderService/CreateOrder";
const GET_ORDER: &str = "/orders.v1.OrderService/GetOrder";
const WATCH_ORDERS: &str = "/orders.v1.OrderService/WatchOrders";

/// The real order-service binary, with its log (text, `info`) in a file this test reads.
struct Binary {
    child: Child,
    addr: SocketAddr,
    /// Where `/metrics` is served, when started with `ORDER_SERVICE_METRICS_ADDR`.
    metrics_addr: Option<SocketAddr>,
    dir: TempDir,
}

impl Binary {
    /// Starts it on port 0 with `env`, under a file limit of `nofile` when given (through
    /// `prlimit`, which execs the binary: the pid stays the server's).
    fn start(env: &[(&str, &str)], nofile: Option<u32>) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let tokens = write_tokens_file(dir.path());
        let binary = env!("CARGO_BIN_EXE_order-service");
        let mut command = match nofile {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={limit}:{limit}")).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let log = std::fs::File::create(dir.path().join("order-service.log")).unwrap();
        let mut child = command
            .args(["--addr", "127.0.0.1:0", "--tokens-file"])
            .arg(&tokens)
            .arg("--database-url")
            .arg(format!(
                "sqlite://{}",
                dir.path().join("orders.db").display()
            ))
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("order-service exited before it listened")
                .unwrap();
            if let Some(addr) = line.strip_prefix("order-service listening on ") {
                break addr.parse().unwrap();
            }
        };
        // Printed right after the address, when metrics are served.
        let metrics_addr = env
            .iter()
            .any(|(name, _)| *name == "ORDER_SERVICE_METRICS_ADDR")
            .then(|| {
                let line = lines.next().expect("no metrics line").unwrap();
                line.strip_prefix("order-service metrics on http://")
                    .and_then(|rest| rest.strip_suffix("/metrics"))
                    .unwrap_or_else(|| panic!("not the metrics line: {line}"))
                    .parse()
                    .unwrap()
            });
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Binary {
            child,
            addr,
            metrics_addr,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("order-service.log")
    }

    /// Waits (up to 10 s) until a line containing `needle` was logged; lines reach the file
    /// within 100 ms (the log is buffered).
    async fn logged(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.log().contains(needle) {
                return true;
            }
            // Polled: the log file is the only sign.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Lines of the log containing `needle`.
    fn log_lines_with(&self, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Resident memory of the process, in MiB (`VmRSS` of /proc/PID/status).
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib / 1024.0
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type RawBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// One HTTP/2 connection that sends whatever bytes a test gives it.
async fn raw_connection(addr: SocketAddr) -> SendRequest<RawBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .max_concurrent_reset_streams(4096)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// A gRPC request to `path` whose body is fed through the returned sender.
fn raw_request(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (
    http::Request<RawBody>,
    mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) {
    let (feed, body) = mpsc::channel(1);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(StreamBody::new(ReceiverStream::new(body)))
        .unwrap();
    (request, feed)
}

/// The 5-byte gRPC message prefix announcing `len` uncompressed bytes.
fn message_prefix(len: u32) -> Bytes {
    let mut prefix = BytesMut::with_capacity(5);
    prefix.put_u8(0);
    prefix.put_u32(len);
    prefix.freeze()
}

/// The gRPC status a response ends with: from its headers (trailers-only) or its trailers.
async fn grpc_status(response: http::Response<hyper::body::Incoming>) -> tonic::Status {
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .expect("a gRPC response ends with trailers");
    tonic::Status::from_header_map(trailers).expect("grpc-status in the trailers")
}

fn error_reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
        .reason
}

/// Sends `len` bytes of a message announced larger than the open services accept; returns the
/// answer, which must come while the body is still unsent (nothing is buffered for it).
async fn over_limit_to(addr: SocketAddr, path: &str) -> tonic::Status {
    let mut sender = raw_connection(addr).await;
    let (request, feed) = raw_request(addr, path, None);
    feed.send(Ok(Frame::data(message_prefix(64 * 1024))))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer while the over-limit body was unsent"))
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), grpc_status(response))
        .await
        .unwrap_or_else(|_| panic!("{path}: the call did not end while the body was unsent"));
    drop(feed);
    status
}

#[tokio::test]
async fn open_services_refuse_a_message_over_their_small_limit_without_waiting_for_it() {
    let server = Binary::start(&[], None);
    let health = over_limit_to(server.addr, HEALTH_CHECK).await;
    assert_eq!(health.code(), Code::ResourceExhausted, "{health:?}");
    assert_eq!(error_reason(&health), reason::MESSAGE_TOO_LARGE);
    // Reflection ends the stream when its request does not decode (tonic-reflection says OK);
    // what matters is that it ended without waiting for, or holding, the 64 KiB.
    over_limit_to(server.addr, REFLECTION_V1).await;
}

/// Opens `streams` calls to `path` on one connection, each announcing a message of
/// `announced` bytes and sending `sent` of them, never finishing; returns once every stream
/// either sent everything or was answered. The connection stays open while the returned
/// handle lives.
async fn unfinished_bodies(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    streams: usize,
    announced: u32,
    sent: usize,
) -> Vec<mpsc::Sender<Result<Frame<Bytes>, Infallible>>> {
    const CHUNK: usize = 64 * 1024;
    let zeros = Bytes::from(vec![0u8; CHUNK]);
    let sender = raw_connection(addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let mut sender = sender.clone();
        let (request, feed) = raw_request(addr, path, token);
        let zeros = zeros.clone();
        calls.spawn(async move {
            let response = tokio::spawn(async move {
                sender.ready().await.ok()?;
                sender.send_request(request).await.ok()
            });
            let mut left = sent;
            let mut fed = feed
                .send(Ok(Frame::data(message_prefix(announced))))
                .await
                .is_ok();
            while fed && left > 0 {
                let chunk = zeros.slice(..left.min(CHUNK));
                left -= chunk.len();
                fed = feed.send(Ok(Frame::data(chunk))).await.is_ok();
            }
            // Either everything was handed over, or the server ended the stream early.
            if !fed {
                let _ = response.await;
            }
            feed
        });
    }
    let mut feeds = Vec::with_capacity(streams);
    while let Some(feed) = calls.join_next().await {
        feeds.push(feed.unwrap());
    }
    // The connection's requests are all in flight; keep their bodies open.
    feeds.push(sender_keepalive(sender));
    feeds
}

/// Ties the connection's lifetime to the returned handle's (dropping every sender closes it).
fn sender_keepalive(
    sender: SendRequest<RawBody>,
) -> mpsc::Sender<Result<Frame<Bytes>, Infallible>> {
    let (keep, mut closed) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tokio::spawn(async move {
        let _sender = sender;
        closed.recv().await;
    });
    keep
}

/// Waits until the resident memory of `server` settles at or below `bound_mib`, giving the
/// allocator time to return freed pages; returns the last reading.
async fn rss_settles_below(server: &Binary, bound_mib: f64) -> f64 {
    let mut rss = server.rss_mib();
    for _ in 0..100 {
        if rss <= bound_mib {
            break;
        }
        // Polled: nothing signals that the allocator returned its pages.
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss = server.rss_mib();
    }
    rss
}

#[tokio::test]
async fn unfinished_bodies_on_open_services_do_not_grow_memory() {
    let server = Binary::start(&[], None);
    let baseline = server.rss_mib();

    // The attack: 256 unfinished 4 MiB health checks on one connection.
    let held = unfinished_bodies(
        server.addr,
        HEALTH_CHECK,
        None,
        256,
        4 * 1024 * 1024 - 1,
        4 * 1024 * 1024 - 64 * 1024,
    )
    .await;
    let during = server.rss_mib();
    // And what still fits the limit: as many streams as a connection may open, each one byte
    // short of a complete message.
    let at_limit = unfinished_bodies(server.addr, HEALTH_CHECK, None, 1000, 4096, 4095).await;
    let during_at_limit = server.rss_mib();
    println!(
        "RSS: {baseline:.1} MiB before, {during:.1} MiB with 256 unfinished 4 MiB bodies, \
         {during_at_limit:.1} MiB with 1000 more at the limit"
    );
    assert!(
        during - baseline < 64.0,
        "256 unfinished over-limit bodies took RSS from {baseline:.1} to {during:.1} MiB"
    );
    assert!(
        during_at_limit - baseline < 64.0,
        "unfinished bodies at the limit took RSS from {baseline:.1} to {during_at_limit:.1} MiB"
    );
    drop(held);
    drop(at_limit);
}

#[tokio::test]
async fn memory_held_for_unfinished_authenticated_bodies_is_given_back_after_close() {
    let server = Binary::start(&[], None);
    let baseline = server.rss_mib();
    // Authenticated callers may send up to --max-message-bytes (1 MiB) per call: 200 unfinished
    // ones make the server hold about 200 MiB while they are open…
    let held = unfinished_bodies(
        server.addr,
        CREATE_ORDER,
        Some(WRITER),
        200,
        1024 * 1024,
        1024 * 1024 - 1,
    )
    .await;
    let during = server.rss_mib();
    drop(held);
    // …and must give it back once the connection is gone.
    let grown = during - baseline;
    let bound = baseline + grown / 4.0;
    let after = rss_settles_below(&server, bound).await;
    println!(
        "RSS: {baseline:.1} MiB before, {during:.1} MiB with 200 unfinished 1 MiB bodies, \
         {after:.1} MiB after the connection closed"
    );
    assert!(
        grown > 100.0,
        "the bodies were not held (RSS {baseline:.1} → {during:.1} MiB): the test proves nothing"
    );
    assert!(
        after <= bound,
        "RSS stayed at {after:.1} MiB after the connection closed (was {baseline:.1} MiB \
         before, {during:.1} MiB while held): less than three quarters were given back"
    );
}

#[tokio::test]
async fn the_process_that_sets_its_own_purge_delay_keeps_its_name() {
    // The binary executes itself again with MIMALLOC_PURGE_DELAY set; operators still find it
    // as order-service (`ps`, `pgrep -x`, `pkill`), not as the name of a /proc link.
    let server = Binary::start(&[], None);
    let pid = server.child.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim_end(), "order-service");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|byte| *byte == 0)
            .any(|entry| entry == b"MIMALLOC_PURGE_DELAY=0"),
        "the running server does not have its purge delay set"
    );
}

/// Waits until the server closes `stream` (end of file or reset) and says whether it did
/// within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // the server's SETTINGS, when it speaks first
            }
        }
    })
    .await
    .is_ok()
}

/// A health check on a connection of its own; `None` if the connection was refused or closed.
async fn health_check(addr: SocketAddr) -> Option<tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .ok()?;
        tokio::spawn(connection);
        health_check_on(&mut sender, addr).await
    })
    .await
    .ok()
    .flatten()
}

/// A health check on an open connection.
async fn health_check_on(
    sender: &mut SendRequest<http_body_util::Full<Bytes>>,
    addr: SocketAddr,
) -> Option<tonic::Status> {
    let request = http::Request::post(format!("http://{addr}{HEALTH_CHECK}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(message_prefix(0)))
        .unwrap();
    sender.ready().await.ok()?;
    let response = sender.send_request(request).await.ok()?;
    Some(grpc_status(response).await)
}

/// An open HTTP/2 connection that has answered one health check.
async fn live_connection(addr: SocketAddr) -> SendRequest<http_body_util::Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let status = health_check_on(&mut sender, addr).await.expect("answered");
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    sender
}

#[tokio::test]
async fn connections_that_never_send_the_preface_are_closed_after_the_handshake_timeout() {
    let server = Binary::start(&[("ORDER_SERVICE_HANDSHAKE_TIMEOUT", "300ms")], None);
    let mut live = live_connection(server.addr).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    for stream in &mut silent {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "a connection that sent nothing is still open 10 s after a 300 ms handshake timeout"
        );
    }
    // A client that did send its preface is not cut off by the deadline.
    let status = health_check_on(&mut live, server.addr)
        .await
        .expect("the live connection was closed");
    assert_eq!(status.code(), Code::Ok);
}

#[tokio::test]
async fn the_connection_cap_closes_connections_over_it_and_says_so() {
    let server = Binary::start(&[("ORDER_SERVICE_MAX_CONNECTIONS", "4")], None);
    let mut live = Vec::new();
    for _ in 0..4 {
        live.push(live_connection(server.addr).await);
    }
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(10)).await,
        "a fifth connection over a cap of 4 was kept open"
    );
    assert!(health_check(server.addr).await.is_none());
    assert!(server.logged("connection limit reached").await);
    assert_eq!(
        server.log_lines_with("connection limit reached"),
        1,
        "one rate-limited line for two refusals; log:\n{}",
        server.log()
    );
    // Those under the cap keep working…
    for sender in &mut live {
        let status = health_check_on(sender, server.addr).await.expect("served");
        assert_eq!(status.code(), Code::Ok);
    }
    // …and once one ends, a new connection is served again.
    live.pop();
    let mut served = None;
    for _ in 0..50 {
        served = health_check(server.addr).await;
        if served.is_some() {
            break;
        }
        // Polled: the server learns of the closed connection on its own time.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.expect("never served again").code(), Code::Ok);
}

/// Whether `/metrics` at `addr` answers 200 on a connection of its own.
async fn metrics_served(addr: SocketAddr) -> bool {
    use tokio::io::AsyncWriteExt;
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loops_back_off_and_recover() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        println!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let server = Binary::start(
        &[
            ("ORDER_SERVICE_HANDSHAKE_TIMEOUT", "1h"),
            ("ORDER_SERVICE_METRICS_ADDR", "127.0.0.1:0"),
        ],
        Some(64),
    );
    let metrics_addr = server.metrics_addr.unwrap();
    // More silent connections than the server has descriptors left, on both of its listeners
    // (the /metrics server waits for a request line as long as it takes): it runs out.
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
        silent.push(TcpStream::connect(metrics_addr).await.unwrap());
    }
    assert!(
        server.logged("accept").await,
        "accept never failed; log:\n{}",
        server.log()
    );
    // Observed for two seconds: the old gRPC loop retried (and logged) every 50 ms, 40 lines;
    // the old /metrics loop retried at once, thousands.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = server.log_lines_with("accept");
    assert_eq!(lines, 2, "one line per listener; log:\n{}", server.log());

    drop(silent);
    // Served again once descriptors are free; the recovery is logged once accepts have worked
    // for a second (every check is a new connection, so a new accept).
    let mut recovered = false;
    for _ in 0..100 {
        if let Some(status) = health_check(server.addr).await {
            assert_eq!(status.code(), Code::Ok);
            recovered = server.log().contains("accepting connections again");
            if recovered {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "log:\n{}", server.log());
    assert!(
        metrics_served(metrics_addr).await,
        "/metrics is not served again"
    );
    assert_eq!(
        server.log_lines_with("accepting connections fails"),
        2,
        "one episode per listener, one line each; log:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn a_request_that_does_not_decode_is_invalid_argument_and_its_cause_is_logged() {
    let server = Binary::start(&[], None);
    let mut sender = raw_connection(server.addr).await;
    let (request, feed) = raw_request(server.addr, GET_ORDER, Some(WRITER));
    // GetOrderRequest.order_id (field 1, a string) holding bytes that are not UTF-8.
    let message: &[u8] = &[0x0a, 0x02, 0xff, 0xfe];
    let mut body = BytesMut::from(&message_prefix(message.len() as u32)[..]);
    body.put_slice(message);
    feed.send(Ok(Frame::data(body.freeze()))).await.unwrap();
    drop(feed);
    let response = sender.send_request(request).await.unwrap();
    let status = grpc_status(response).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(error_reason(&status), reason::MALFORMED_REQUEST);
    assert!(
        !status.message().contains("UTF-8") && !status.message().contains("Protobuf"),
        "the decoder's text reached the client: {:?}",
        status.message()
    );
    assert!(
        server.logged("data is not UTF-8 encoded").await,
        "no cause in the log:\n{}",
        server.log()
    );
}

/// The status of a call to `path` whose whole body is `body` (sent as one frame, then the end),
/// with `grpc-encoding` set when given.
async fn answer_to(
    addr: SocketAddr,
    path: &str,
    grpc_encoding: Option<&'static str>,
    body: Bytes,
) -> tonic::Status {
    let mut sender = raw_connection(addr).await;
    let (mut request, feed) = raw_request(addr, path, Some(WRITER));
    if let Some(encoding) = grpc_encoding {
        request
            .headers_mut()
            .insert("grpc-encoding", http::HeaderValue::from_static(encoding));
    }
    if !body.is_empty() {
        feed.send(Ok(Frame::data(body))).await.unwrap();
    }
    drop(feed);
    let response = sender.send_request(request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), grpc_status(response))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer"))
}

/// WatchOrders is answered outside tonic's generated server (to send shared frames); its
/// refusals must be the same as every other method's.
#[tokio::test]
async fn watch_orders_refuses_bad_requests_as_the_other_methods_do() {
    let server = Binary::start(&[], None);
    // Field 1 (a string in both requests) holding bytes that are not UTF-8.
    let undecodable: &[u8] = &[0x0a, 0x02, 0xff, 0xfe];
    let mut framed = BytesMut::from(&message_prefix(undecodable.len() as u32)[..]);
    framed.put_slice(undecodable);
    let framed = framed.freeze();
    let cases: [(&str, Option<&'static str>, Bytes); 4] = [
        ("undecodable", None, framed.clone()),
        ("no message", None, Bytes::new()),
        ("cut short", None, message_prefix(10)),
        ("gzip, not accepted", Some("gzip"), framed),
    ];
    for (case, encoding, body) in cases {
        let get = answer_to(server.addr, GET_ORDER, encoding, body.clone()).await;
        let watch = answer_to(server.addr, WATCH_ORDERS, encoding, body).await;
        assert_ne!(get.code(), Code::Ok, "{case}: {get:?}");
        assert_eq!(
            watch.code(),
            get.code(),
            "{case}: {watch:?} against {get:?}"
        );
        assert_eq!(watch.message(), get.message(), "{case}");
        assert_eq!(
            watch.metadata().get("grpc-accept-encoding"),
            get.metadata().get("grpc-accept-encoding"),
            "{case}"
        );
        if encoding.is_none() {
            assert_eq!(error_reason(&watch), reason::MALFORMED_REQUEST, "{case}");
        }
    }
}
