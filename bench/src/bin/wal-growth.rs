//! `wal-growth`: how large order-service's SQLite write-ahead log gets under unpaced durable
//! CreateOrder load, and whether it shrinks back when the load stops and after a graceful stop.
//! Starts the release `order-service` on a fresh database, runs the closed-loop create load of
//! `bench` for `--duration`, samples the size of `orders.db-wal` every few milliseconds
//! throughout, then watches it for `--idle` with no load, sends SIGTERM and reports what is left.
//!
//! Run: `cargo build --release -p order-service -p order-status-bench && target/release/wal-growth`

use anyhow::Context as _;
use clap::Parser;
use order_status_bench::load::{self, LoadSettings, Target, Workload};
use order_status_bench::processes::ServerProcess;
use order_status_bench::report::error_lines;
use order_status_bench::setup::{self, Scratch};
use order_status_bench::tokens;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Peak WAL size of order-service under unpaced create load.
#[derive(Debug, Parser)]
struct Args {
    /// How long the create load runs.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long the WAL is watched after the load stops, before the graceful stop.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// Passed to order-service as `--wal-limit-bytes` when given (older builds lack the flag).
    #[arg(long)]
    wal_limit_bytes: Option<u64>,
    /// The order-service binary [default: next to this binary].
    #[arg(long)]
    order_service: Option<PathBuf>,
    /// Where the temporary directory (database, log) is made [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// How often the WAL's size is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How long the service may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wal-growth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let order_service = setup::sibling_binary(args.order_service.as_deref(), "order-service")?;
    let token = tokens::generate();
    let Scratch { dir, tokens_file } =
        Scratch::new("order-status-wal-", args.work_dir.as_deref(), &token)?;
    let database = dir.path().join("orders.db");
    let wal = dir.path().join("orders.db-wal");

    let mut command = Command::new(&order_service);
    command
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(format!("sqlite://{}", database.display()))
        .arg("--tokens-file")
        .arg(&tokens_file)
        .env("RUST_LOG", "warn");
    if let Some(limit) = args.wal_limit_bytes {
        command.arg("--wal-limit-bytes").arg(limit.to_string());
    }
    let server = ServerProcess::start(
        "order-service",
        &order_service,
        command,
        dir.path().join("order-service.log"),
    )
    .await?;
    println!(
        "order-service {} at {}, database {}; unpaced CreateOrder load, {} connections x {} \
         calls in flight, for {:?}",
        order_service.display(),
        server.addr,
        database.display(),
        args.connections,
        args.streams,
        args.duration
    );

    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample_peak(wal.clone(), Arc::clone(&peak)));
    let target = Target {
        url: format!("http://{}", server.addr),
        ca_certificate_pem: None,
        authorization: format!("Bearer {token}").parse()?,
        server_pid: server.pid,
    };
    let started = Instant::now();
    let result = load::run(
        &target,
        &Workload::CreateOrder {
            key_prefix: format!("wal-{}", &token[..8]),
        },
        LoadSettings {
            connections: args.connections,
            streams_per_connection: args.streams,
            warmup: Duration::ZERO,
            measure: args.duration,
            call_deadline: Duration::from_secs(5),
        },
        None,
    )
    .await?;
    let loaded = started.elapsed();
    let at_end_of_load = size(&wal);
    let peak_under_load = peak.load(Ordering::Relaxed);
    println!(
        "load: {} creates in {:.1}s ({:.0}/s), {} failed",
        result.ok,
        loaded.as_secs_f64(),
        result.ok as f64 / loaded.as_secs_f64(),
        result.error_count()
    );
    for line in error_lines(&result) {
        println!("  {line}");
    }
    println!(
        "WAL: peak {} under load, {} when the load stopped; database {}",
        mib(peak_under_load),
        mib(at_end_of_load),
        mib(size(&database))
    );

    tokio::time::sleep(args.idle).await;
    println!(
        "WAL after {:?} without load: {}",
        args.idle,
        mib(size(&wal))
    );
    sampler.abort();
    terminate(server.pid).await?;
    tokio::time::timeout(STOP_TIMEOUT, server.wait())
        .await
        .context("order-service did not stop within 30 s of SIGTERM")??;
    println!(
        "WAL after a graceful stop: {}",
        if wal.exists() {
            mib(size(&wal))
        } else {
            "gone (0 MiB)".into()
        }
    );
    Ok(())
}

/// Keeps the largest size seen of `wal` in `peak`.
async fn sample_peak(wal: PathBuf, peak: Arc<AtomicU64>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        ticks.tick().await;
        peak.fetch_max(size(&wal), Ordering::Relaxed);
    }
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Asks the process `pid` to stop gracefully (SIGTERM), as an orchestrator would.
async fn terminate(pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -TERM {pid} failed: {status}");
    Ok(())
}
