//! `bench`: starts the release `order-service` (auth on, SQLite on disk) and `bare-server` as
//! child processes, loads both with the same client settings in interleaved rounds, and prints
//! requests/s, p50/p99 latency and the ratio to bare tonic for GetOrder; for durable CreateOrder
//! it prints creates/s against one-fsync-per-commit SQLite measured on the same disk in the same
//! rounds.
//!
//! With `--otlp-collector` the service exports every span (sampler `always_on`) and its metrics
//! to a live OTLP/gRPC collector in this process, which counts what it receives; bare tonic stays
//! the baseline.
//!
//! Run: `cargo build --release -p order-service -p order-status-bench && target/release/bench`

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use order_status_bench::collector::{Collector, Received};
use order_status_bench::cpu::CpuClock;
use order_status_bench::fsync_baseline;
use order_status_bench::load::{self, LoadResult, LoadSettings, Target, Workload};
use order_status_bench::processes::ServerProcess;
use order_status_bench::report::{Figures, error_lines};
use order_status_bench::setup::{self, Scratch};
use order_status_bench::tokens;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

/// Benchmark order-service against bare tonic and one-fsync-per-commit SQLite.
#[derive(Debug, Parser)]
struct Args {
    /// Calls to measure (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "get-order,create-order"
    )]
    calls: Vec<Call>,
    /// Rounds; each runs every measurement once, bare and real alternating which goes first.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Load before each measured window.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Each measured window.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    measure: Duration,
    /// HTTP/2 connections per target.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// Deadline sent with every call.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    call_deadline: Duration,
    /// Orders created at the start of every round; that round's GetOrder reads them in turn.
    #[arg(long, default_value_t = 1000)]
    seed_orders: usize,
    /// RUST_LOG for order-service; unset means the service's default (info: a line per call).
    #[arg(long)]
    service_rust_log: Option<String>,
    /// The order-service binary [default: next to this binary].
    #[arg(long)]
    order_service: Option<PathBuf>,
    /// The bare-server binary [default: next to this binary].
    #[arg(long)]
    bare_server: Option<PathBuf>,
    /// Where the temporary directory (SQLite files, logs, tokens) is made; it must be on the
    /// disk whose fsync you want to measure [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the temporary directory (database, server logs) instead of deleting it at the end.
    #[arg(long)]
    keep_work_dir: bool,
    /// Start a live OTLP/gRPC collector in this process and make order-service export every
    /// span (`OTEL_TRACES_SAMPLER=always_on`) and its metrics (every second) to it; the spans
    /// received are counted and checked against the calls made.
    #[arg(long)]
    otlp_collector: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("bench: {failed} calls failed in the measured windows (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// A measured call.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Call {
    /// GetOrder against bare tonic and order-service.
    GetOrder,
    /// CreateOrder against both, and one-fsync-per-commit SQLite.
    CreateOrder,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Bare,
    Real,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Bare => "bare tonic   ",
            Side::Real => "order-service",
        }
    }
}

/// Totals over all rounds.
#[derive(Default)]
struct Totals {
    get_bare: LoadResult,
    get_real: LoadResult,
    create_bare: LoadResult,
    create_real: LoadResult,
    fsync_commits: u64,
    fsync_elapsed: Duration,
}

async fn run(args: Args) -> anyhow::Result<u64> {
    let order_service = setup::sibling_binary(args.order_service.as_deref(), "order-service")?;
    let bare_server = setup::sibling_binary(args.bare_server.as_deref(), "bare-server")?;
    let token = tokens::generate();
    let Scratch { dir, tokens_file } =
        Scratch::new("order-status-bench-", args.work_dir.as_deref(), &token)?;
    let database = dir.path().join("orders.db");
    let collector = if args.otlp_collector {
        Some(
            Collector::start()
                .await
                .context("starting the OTLP collector")?,
        )
    } else {
        None
    };

    let real = ServerProcess::start(
        "order-service",
        &order_service,
        order_service_command(
            &order_service,
            &database,
            &tokens_file,
            &args,
            collector.as_ref(),
        ),
        dir.path().join("order-service.log"),
    )
    .await?;
    let bare = ServerProcess::start(
        "bare-server",
        &bare_server,
        Command::new(&bare_server),
        dir.path().join("bare-server.log"),
    )
    .await?;
    let cpu = match CpuClock::new() {
        Ok(clock) => Some(clock),
        Err(error) => {
            eprintln!("bench: no CPU accounting: {error}");
            None
        }
    };
    let authorization = format!("Bearer {token}").parse()?;
    let target = |server: &ServerProcess| Target {
        url: format!("http://{}", server.addr),
        ca_certificate_pem: None,
        authorization: Clone::clone(&authorization),
        server_pid: server.pid,
    };
    let (real_target, bare_target) = (target(&real), target(&bare));
    let run_tag = &token[..8];
    let baseline_db = fsync_baseline::open(&dir.path().join("fsync-baseline.db"))?;

    let settings = LoadSettings {
        connections: args.connections,
        streams_per_connection: args.streams,
        warmup: args.warmup,
        measure: args.measure,
        call_deadline: args.call_deadline,
    };
    print_header(&args, &order_service, &real, &bare, &database);
    if let Some(collector) = &collector {
        println!(
            "order-service exports every span and its metrics (every 1 s) to the OTLP/gRPC \
             collector at {} in this process\n",
            collector.endpoint()
        );
    }

    let mut totals = Totals::default();
    let mut seeded = 0_u64;
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 {
            [Side::Bare, Side::Real]
        } else {
            [Side::Real, Side::Bare]
        };
        println!("round {round}/{}", args.rounds);
        let sides = |call| {
            if args.calls.contains(&call) {
                &order[..]
            } else {
                &[]
            }
        };
        // Fresh orders every round: GetOrder then reads recently written orders in every
        // round, rather than orders that the CreateOrder windows of earlier rounds have pushed
        // out of the service's cache of recent writes.
        let order_ids: Arc<[String]> = if args.calls.contains(&Call::GetOrder) {
            load::seed_orders(
                &real_target,
                args.seed_orders,
                &format!("seed-{run_tag}-r{round}"),
                args.call_deadline,
            )
            .await
            .context("creating the orders GetOrder reads")?
            .into()
        } else {
            Arc::from(Vec::new())
        };
        seeded += order_ids.len() as u64;
        for &side in sides(Call::GetOrder) {
            let (target, total) = match side {
                Side::Bare => (&bare_target, &mut totals.get_bare),
                Side::Real => (&real_target, &mut totals.get_real),
            };
            let workload = Workload::GetOrder {
                order_ids: Arc::clone(&order_ids),
            };
            let mut result = load::run(target, &workload, settings, cpu).await?;
            print_round("GetOrder   ", side, "req", &mut result);
            total.merge(&result);
            if let (Some(collector), Side::Real) = (&collector, side) {
                print_received("so far", &collector.received());
            }
        }
        for &side in sides(Call::CreateOrder) {
            let (target, total) = match side {
                Side::Bare => (&bare_target, &mut totals.create_bare),
                Side::Real => (&real_target, &mut totals.create_real),
            };
            let workload = Workload::CreateOrder {
                key_prefix: format!("bench-{run_tag}-r{round}"),
            };
            let mut result = load::run(target, &workload, settings, cpu).await?;
            print_round("CreateOrder", side, "create", &mut result);
            total.merge(&result);
        }
        if !args.calls.contains(&Call::CreateOrder) {
            continue;
        }
        let rate = tokio::task::block_in_place(|| {
            fsync_baseline::single_row_commits(&baseline_db, args.measure)
        })?;
        println!(
            "  fsync/commit  {:>9.0} commit/s  (single-row SQLite commits, WAL, synchronous=FULL)",
            rate.per_second()
        );
        totals.fsync_commits += rate.commits;
        totals.fsync_elapsed += rate.elapsed;
    }

    let failed = print_summary(&mut totals, &args);
    let spans_lost = match &collector {
        Some(collector) => !check_exported(collector, &totals).await,
        None => false,
    };
    let log_bytes = std::fs::metadata(&real.log).map(|m| m.len()).unwrap_or(0);
    real.stop().await?;
    bare.stop().await?;
    let stored = count_stored_orders(&database)?;
    let acknowledged = seeded + totals.create_real.ok;
    println!(
        "\norder-service stored {stored} orders after being killed (seeded + acknowledged in the \
         windows: {acknowledged}, plus warm-up and in-flight creates); its stderr log grew to {:.1} MB",
        log_bytes as f64 / 1e6
    );
    if args.keep_work_dir {
        println!("kept {}", dir.keep().display());
    }
    if stored < acknowledged {
        anyhow::bail!("fewer orders on disk ({stored}) than acknowledged ({acknowledged})");
    }
    if spans_lost {
        anyhow::bail!("the OTLP collector received fewer GetOrder spans than calls (see above)");
    }
    Ok(failed)
}

fn order_service_command(
    binary: &Path,
    database: &Path,
    tokens: &Path,
    args: &Args,
    collector: Option<&Collector>,
) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(format!("sqlite://{}", database.display()))
        .arg("--tokens-file")
        .arg(tokens);
    // Only the flags above and RUST_LOG below configure the service: no exporter, no metrics
    // endpoint or limit inherited from the caller's environment.
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("ORDER_SERVICE_")
            || name_text.starts_with("OTEL_")
            || name_text == "LOG_FORMAT"
        {
            command.env_remove(&name);
        }
    }
    match &args.service_rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    if let Some(collector) = collector {
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            .env("OTEL_TRACES_SAMPLER", "always_on")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "1000");
    }
    command
}

/// The server span name of GetOrder, as the service exports it.
const GET_ORDER_SPAN: &str = "orders.v1.OrderService/GetOrder";

fn print_received(when: &str, received: &Received) {
    println!(
        "  OTLP collector ({when}): {} spans in {} exports, {} GetOrder server spans, {} \
         get_order store spans; the service's exporter reports {} spans dropped (queue full)",
        received.span_count(),
        received.trace_exports,
        received.spans_of("server", GET_ORDER_SPAN),
        received.spans_of("internal", "get_order"),
        received.dropped_queue_full(),
    );
}

/// Waits for the last batches, prints what the collector received and checks that it received
/// a server span for at least every GetOrder call counted OK (warm-up calls add more).
async fn check_exported(collector: &Collector, totals: &Totals) -> bool {
    // Longer than the batch processor's 5 s schedule delay and the 1 s metric interval.
    let received = collector
        .settle(
            "server",
            GET_ORDER_SPAN,
            Duration::from_secs(7),
            Duration::from_secs(30),
        )
        .await;
    println!();
    print_received("at the end", &received);
    let spans = received.spans_of("server", GET_ORDER_SPAN);
    let calls = totals.get_real.ok;
    if spans >= calls {
        println!(
            "  OTLP collector: {spans} GetOrder server spans for {calls} GetOrder calls counted \
             in the measured windows (warm-up calls are not counted, their spans are)"
        );
        true
    } else {
        println!(
            "  OTLP collector: only {spans} GetOrder server spans for {calls} GetOrder calls \
             counted in the measured windows: spans were lost"
        );
        false
    }
}

fn print_header(
    args: &Args,
    order_service: &Path,
    real: &ServerProcess,
    bare: &ServerProcess,
    database: &Path,
) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "order-status benchmark: {} connections x {} concurrent calls per target, {:?} warm-up + \
         {:?} measured per window, {} rounds, {cpus} CPUs (client and servers share them)",
        args.connections, args.streams, args.warmup, args.measure, args.rounds
    );
    println!(
        "order-service {} at {} (auth on, SQLite {}, RUST_LOG={}, stderr -> {})",
        order_service.display(),
        real.addr,
        database.display(),
        args.service_rust_log
            .as_deref()
            .unwrap_or("unset (default info)"),
        real.log.display()
    );
    println!(
        "bare tonic    at {} (same proto, canned answers, no auth, no storage, TCP_NODELAY)",
        bare.addr
    );
    println!("only calls that ended with grpc-status 0 and the expected order are counted\n");
}

fn print_round(call: &str, side: Side, unit: &str, result: &mut LoadResult) {
    let figures = Figures::of(result);
    println!("  {call} {}  {}", side.label(), figures.line(unit));
    for line in error_lines(result) {
        println!("      {line}");
    }
}

fn print_summary(totals: &mut Totals, args: &Args) -> u64 {
    let get_bare = Figures::of(&mut totals.get_bare);
    let get_real = Figures::of(&mut totals.get_real);
    let create_bare = Figures::of(&mut totals.create_bare);
    let create_real = Figures::of(&mut totals.create_real);
    println!("\nall {} rounds", args.rounds);
    if args.calls.contains(&Call::GetOrder) {
        println!("  GetOrder     bare tonic     {}", get_bare.line("req"));
        println!("  GetOrder     order-service  {}", get_real.line("req"));
        println!(
            "  GetOrder     order-service / bare tonic: {:.2} x requests/s, p50 x{:.2}, p99 x{:.2}{}",
            get_real.per_second / get_bare.per_second,
            ratio(get_real.p50, get_bare.p50),
            ratio(get_real.p99, get_bare.p99),
            cpu_ratio(&get_real, &get_bare)
        );
    }
    if args.calls.contains(&Call::CreateOrder) {
        let fsync_rate = totals.fsync_commits as f64 / totals.fsync_elapsed.as_secs_f64();
        println!(
            "  CreateOrder  bare tonic     {}",
            create_bare.line("create")
        );
        println!(
            "  CreateOrder  order-service  {}",
            create_real.line("create")
        );
        println!("  CreateOrder  one fsync per commit: {fsync_rate:.0} commit/s");
        println!(
            "  CreateOrder  order-service durable creates/s / one-fsync-per-commit rate: {:.1} x \
             (and {:.2} x bare tonic's creates/s)",
            create_real.per_second / fsync_rate,
            create_real.per_second / create_bare.per_second
        );
    }
    [get_bare, get_real, create_bare, create_real]
        .iter()
        .map(|figures| figures.errors)
        .sum()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn cpu_ratio(real: &Figures, bare: &Figures) -> String {
    match (real.server_cpu_per_call, bare.server_cpu_per_call) {
        (Some(real), Some(bare)) => format!(", server CPU per call x{:.2}", ratio(real, bare)),
        _ => String::new(),
    }
}

fn count_stored_orders(database: &Path) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open(database)
        .with_context(|| format!("opening {}", database.display()))?;
    Ok(conn.query_row("SELECT count(*) FROM orders", [], |row| row.get(0))?)
}
