//! The network edge against hostile or careless clients, on the real binary where the process
//! matters (logs): requests that do not decode. Raw HTTP/2 (hyper's client) where a tonic client
//! would refuse to send what a hostile one sends.

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
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;

const GET_ORDER: &str = "/orders.v1.OrderService/GetOrder";

/// The real order-service binary, with its log (text, `info`) in a file this test reads.
struct Binary {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Binary {
    /// Starts it on port 0 with `env`.
    fn start(env: &[(&str, &str)]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let tokens = write_tokens_file(dir.path());
        let binary = env!("CARGO_BIN_EXE_order-service");
        let mut command = Command::new(binary);
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
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Binary { child, addr, dir }
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

#[tokio::test]
async fn a_request_that_does_not_decode_is_invalid_argument_and_its_cause_is_logged() {
    let server = Binary::start(&[]);
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
