//! `tls-bench`: what TLS costs order-service, measured against plaintext in the same run. Two
//! release order-service processes with the same settings, one plaintext and one serving TLS
//! (a certificate of a CA made for the run with openssl), get the same GetOrder load in
//! interleaved rounds; then new connections per second to each: TCP connect, (TLS handshake,)
//! the HTTP/2 preface, and the server's first SETTINGS frame, so that a connection counts only
//! once the server is ready for calls on it.
//!
//! Run: `cargo build --release -p order-service -p order-status-bench && target/release/tls-bench`

use clap::Parser;
use order_status_bench::cpu::CpuClock;
use order_status_bench::load::{self, LoadResult, LoadSettings, Target, Workload};
use order_status_bench::processes::ServerProcess;
use order_status_bench::report::Figures;
use order_status_bench::setup::{self, Scratch};
use order_status_bench::tokens;
use order_status_tests::tls::TestCa;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio_rustls::rustls;

/// GetOrder over TLS against plaintext, and new connections per second, in one run.
#[derive(Debug, Parser)]
struct Args {
    /// Rounds; each measures both servers, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Load before each measured window.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Each measured window.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    measure: Duration,
    /// HTTP/2 connections per target for GetOrder.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// Clients opening new connections one after another, for connections per second.
    #[arg(long, default_value_t = 16)]
    connecting_clients: usize,
    /// Orders created at the start of every round; that round's GetOrder reads them in turn.
    #[arg(long, default_value_t = 1000)]
    seed_orders: usize,
    /// RUST_LOG for both services; unset means their default (info: a line per call).
    #[arg(long)]
    service_rust_log: Option<String>,
    /// The order-service binary [default: next to this binary].
    #[arg(long)]
    order_service: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("tls-bench: {failed} calls or connections failed (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("tls-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Plain,
    Tls,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Plain => "plaintext",
            Side::Tls => "TLS      ",
        }
    }
}

/// New connections made in one window.
#[derive(Debug, Default, Clone, Copy)]
struct Connects {
    made: u64,
    failed: u64,
    window: Duration,
    server_cpu: Option<Duration>,
}

impl Connects {
    fn merge(&mut self, other: Connects) {
        self.server_cpu = if self.window.is_zero() {
            other.server_cpu
        } else {
            self.server_cpu.zip(other.server_cpu).map(|(a, b)| a + b)
        };
        self.made += other.made;
        self.failed += other.failed;
        self.window += other.window;
    }

    fn per_second(&self) -> f64 {
        self.made as f64 / self.window.as_secs_f64()
    }

    fn line(&self) -> String {
        let cpu = match self.server_cpu {
            Some(cpu) if self.made > 0 => format!(
                ", server CPU {:.0} µs/connection",
                cpu.as_secs_f64() * 1e6 / self.made as f64
            ),
            _ => String::new(),
        };
        format!(
            "{:>8.0} connections/s{cpu}{}",
            self.per_second(),
            if self.failed > 0 {
                format!(", {} FAILED", self.failed)
            } else {
                String::new()
            }
        )
    }
}

async fn run(args: Args) -> anyhow::Result<u64> {
    let binary = setup::sibling_binary(args.order_service.as_deref(), "order-service")?;
    let token = tokens::generate();
    let Scratch { dir, tokens_file } = Scratch::new("order-status-tls-bench-", None, &token)?;
    let ca = TestCa::new(dir.path(), "bench")?;
    let certificate = ca.server("order-service")?;

    let start = |name: &str, tls: bool| {
        let mut command = Command::new(&binary);
        command
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--database-url")
            .arg(format!(
                "sqlite://{}",
                dir.path().join(format!("{name}.db")).display()
            ))
            .arg("--tokens-file")
            .arg(&tokens_file);
        for (variable, _) in std::env::vars_os() {
            let text = variable.to_string_lossy();
            if text.starts_with("ORDER_SERVICE_")
                || text.starts_with("OTEL_")
                || text == "LOG_FORMAT"
            {
                command.env_remove(&variable);
            }
        }
        if tls {
            command
                .arg("--tls-cert")
                .arg(&certificate.cert)
                .arg("--tls-key")
                .arg(&certificate.key);
        }
        match &args.service_rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        ServerProcess::start(
            "order-service",
            &binary,
            command,
            dir.path().join(format!("{name}.log")),
        )
    };
    let plain = start("plain", false).await?;
    let tls = start("tls", true).await?;
    let cpu = CpuClock::new().ok();
    let authorization = format!("Bearer {token}").parse()?;
    let ca_pem = std::fs::read(ca.cert())?;
    let plain_target = Target {
        url: format!("http://{}", plain.addr),
        ca_certificate_pem: None,
        authorization: Clone::clone(&authorization),
        server_pid: plain.pid,
    };
    // The certificate is for 127.0.0.1 (and localhost).
    let tls_target = Target {
        url: format!("https://{}", tls.addr),
        ca_certificate_pem: Some(ca_pem),
        authorization,
        server_pid: tls.pid,
    };
    let settings = LoadSettings {
        connections: args.connections,
        streams_per_connection: args.streams,
        warmup: args.warmup,
        measure: args.measure,
        call_deadline: Duration::from_secs(5),
    };
    let tls_client = Arc::new(tls_client_config(ca.cert())?);
    println!(
        "tls-bench: GetOrder, {} connections x {} calls per server, {:?} + {:?} per window, {} \
         rounds; then {} clients opening new connections; {} CPUs shared by client and servers",
        args.connections,
        args.streams,
        args.warmup,
        args.measure,
        args.rounds,
        args.connecting_clients,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "plaintext order-service at {}, TLS (ECDSA P-256, ring) at {}\n",
        plain.addr, tls.addr
    );

    let (mut get_plain, mut get_tls) = (LoadResult::default(), LoadResult::default());
    let (mut new_plain, mut new_tls) = (Connects::default(), Connects::default());
    for round in 1..=args.rounds {
        println!("round {round}/{}", args.rounds);
        let sides = if round % 2 == 1 {
            [Side::Plain, Side::Tls]
        } else {
            [Side::Tls, Side::Plain]
        };
        for side in sides {
            let (target, total) = match side {
                Side::Plain => (&plain_target, &mut get_plain),
                Side::Tls => (&tls_target, &mut get_tls),
            };
            let order_ids = load::seed_orders(
                target,
                args.seed_orders,
                &format!("seed-{}-r{round}", &token[..8]),
                settings.call_deadline,
            )
            .await?;
            let workload = Workload::GetOrder {
                order_ids: order_ids.into(),
            };
            let mut result = load::run(target, &workload, settings, cpu).await?;
            println!(
                "  GetOrder     {}  {}",
                side.label(),
                Figures::of(&mut result).line("req")
            );
            total.merge(&result);
        }
        for side in sides {
            let (addr, pid, tls_config, total) = match side {
                Side::Plain => (plain.addr, plain.pid, None, &mut new_plain),
                Side::Tls => (tls.addr, tls.pid, Some(&tls_client), &mut new_tls),
            };
            let connects = new_connections(
                addr,
                pid,
                tls_config.cloned(),
                args.connecting_clients,
                &settings,
                cpu,
            )
            .await;
            println!("  new conn.    {}  {}", side.label(), connects.line());
            total.merge(connects);
        }
    }

    let plain_figures = Figures::of(&mut get_plain);
    let tls_figures = Figures::of(&mut get_tls);
    println!("\nall {} rounds", args.rounds);
    println!("  GetOrder     plaintext  {}", plain_figures.line("req"));
    println!("  GetOrder     TLS        {}", tls_figures.line("req"));
    let cpu_ratio = match (
        tls_figures.server_cpu_per_call,
        plain_figures.server_cpu_per_call,
    ) {
        (Some(tls), Some(plain)) => format!(
            ", server CPU per call x{:.2}",
            tls.as_secs_f64() / plain.as_secs_f64()
        ),
        _ => String::new(),
    };
    println!(
        "  GetOrder     TLS / plaintext: {:.2} x requests/s, p50 x{:.2}, p99 x{:.2}{cpu_ratio}",
        tls_figures.per_second / plain_figures.per_second,
        tls_figures.p50.as_secs_f64() / plain_figures.p50.as_secs_f64(),
        tls_figures.p99.as_secs_f64() / plain_figures.p99.as_secs_f64(),
    );
    println!("  new conn.    plaintext  {}", new_plain.line());
    println!("  new conn.    TLS        {}", new_tls.line());
    println!(
        "  new conn.    TLS / plaintext: {:.2} x connections/s",
        new_tls.per_second() / new_plain.per_second()
    );
    plain.stop().await?;
    tls.stop().await?;
    Ok(plain_figures.errors + tls_figures.errors + new_plain.failed + new_tls.failed)
}

/// A client configuration that trusts `ca`, offers ALPN `h2` and never resumes a session, so
/// every connection pays a full handshake.
fn tls_client_config(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)? {
        roots.add(certificate?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// `clients` tasks each open connection after connection to `addr` for the warm-up and the
/// measured window; counts those that completed inside the window.
async fn new_connections(
    addr: SocketAddr,
    server_pid: u32,
    tls: Option<Arc<rustls::ClientConfig>>,
    clients: usize,
    settings: &LoadSettings,
    cpu: Option<CpuClock>,
) -> Connects {
    let start = Instant::now() + settings.warmup;
    let end = start + settings.measure;
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let tls = tls.clone();
        tasks.spawn(async move {
            let (mut made, mut failed) = (0_u64, 0_u64);
            while Instant::now() < end {
                let opened = open_ready_connection(addr, tls.as_ref()).await;
                let done = Instant::now();
                if done < start || done >= end {
                    continue;
                }
                match opened {
                    Ok(()) => made += 1,
                    Err(_) => failed += 1,
                }
            }
            (made, failed)
        });
    }
    let server = |clock: CpuClock| clock.process_time(server_pid).ok();
    tokio::time::sleep_until(start.into()).await;
    let before = cpu.and_then(server);
    tokio::time::sleep_until(end.into()).await;
    let after = cpu.and_then(server);
    let mut connects = Connects {
        window: settings.measure,
        server_cpu: after.zip(before).map(|(a, b)| a - b),
        ..Connects::default()
    };
    while let Some(Ok((made, failed))) = tasks.join_next().await {
        connects.made += made;
        connects.failed += failed;
    }
    connects
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// One new connection, ready for calls: connected, (TLS handshake,) preface sent and the
/// server's first frame read. Then closed.
async fn open_ready_connection(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match tls {
        None => http2_ready(tcp).await,
        Some(config) => {
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(
                    rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                    tcp,
                )
                .await?;
            http2_ready(stream).await
        }
    }
}

async fn http2_ready(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> anyhow::Result<()> {
    stream.write_all(PREFACE).await?;
    stream.flush().await?;
    let mut frame_header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut frame_header)).await??;
    anyhow::ensure!(
        frame_header[3] == 4,
        "the server's first frame is not SETTINGS"
    );
    Ok(())
}
