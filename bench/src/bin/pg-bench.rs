//! `pg-bench`: order-service on PostgreSQL. Makes a database of its own on the server named by
//! `ORDER_STATUS_TEST_POSTGRES`, starts two release order-services on it (replicas A and B) and
//! `bare-server`, and in rounds that alternate their order measures: durable CreateOrder/s on
//! one replica and spread over both, against PostgreSQL's own single-row commit rate (one
//! client, and as many clients as the load has calls in flight); GetOrder against bare tonic;
//! and the delay from a create on A to its event on a watcher on B. Drops the database at the
//! end.
//!
//! Run: `cargo build --release -p order-service -p order-status-bench &&
//! scripts/with-postgres.sh --durable target/release/pg-bench`

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use order_status_bench::cpu::CpuClock;
use order_status_bench::delivery::{self, DeliveryResult, PacedSettings};
use order_status_bench::fsync_baseline::CommitRate;
use order_status_bench::load::{
    self, DatabaseProbe, DatabaseReading, LoadResult, LoadSettings, Target, Workload,
};
use order_status_bench::postgres::{self, BenchDatabase, ServerFacts};
use order_status_bench::processes::ServerProcess;
use order_status_bench::report::{Figures, error_lines, millis};
use order_status_bench::setup::{self, Scratch};
use order_status_bench::tokens;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
use tokio_postgres::Client;

/// Benchmark order-service on PostgreSQL (1 and 2 replicas) against PostgreSQL's own
/// single-row commit rate and bare tonic, and cross-replica watch delivery.
#[derive(Debug, Parser)]
struct Args {
    /// Measurements to make (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "get-order,create-order,watch"
    )]
    calls: Vec<Call>,
    /// Rounds; each runs every measurement once, in an order that alternates per round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Load before each measured window.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Each measured window.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    measure: Duration,
    /// HTTP/2 connections per load (spread over the replicas when there are two).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent calls per connection; connections x streams is also the number of clients
    /// of the many-client commit baseline.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// Deadline sent with every call.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    call_deadline: Duration,
    /// Orders created at the start of every round; that round's GetOrder reads them in turn.
    #[arg(long, default_value_t = 1000)]
    seed_orders: usize,
    /// Creates per second on replica A while the watcher on replica B is timed.
    #[arg(long, default_value_t = 200.0)]
    watch_rate: f64,
    /// RUST_LOG for order-service; unset means the service's default (info: a line per call).
    #[arg(long)]
    service_rust_log: Option<String>,
    /// One more argument for both order-services (repeat for several), such as a pool size.
    #[arg(long = "service-arg", allow_hyphen_values = true)]
    service_args: Vec<String>,
    /// The order-service binary [default: next to this binary].
    #[arg(long)]
    order_service: Option<PathBuf>,
    /// The bare-server binary [default: next to this binary].
    #[arg(long)]
    bare_server: Option<PathBuf>,
    /// Where the temporary directory (tokens, server logs) is made [default: the system temp
    /// dir]. The database is PostgreSQL's, wherever its data directory is.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the temporary directory (server logs) instead of deleting it at the end.
    #[arg(long)]
    keep_work_dir: bool,
    /// Keep the benchmark's database instead of dropping it at the end.
    #[arg(long)]
    keep_database: bool,
}

/// A measurement.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Call {
    /// GetOrder against bare tonic and order-service (replica A).
    GetOrder,
    /// CreateOrder on 1 and 2 replicas, and PostgreSQL's single-row commits.
    CreateOrder,
    /// Creates on replica A paced at --watch-rate, delivered to a watcher on replica B.
    Watch,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!(
                "pg-bench: {failed} calls failed or events went undelivered or out of order in \
                 the measured windows (see above)"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("pg-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// One of the write measurements of a round.
#[derive(Debug, Clone, Copy)]
enum Write {
    OneReplica,
    TwoReplicas,
    OneClient,
    ManyClients,
}

/// Totals over all rounds.
#[derive(Default)]
struct Totals {
    get_bare: LoadResult,
    get_real: LoadResult,
    create_one: LoadResult,
    create_two: LoadResult,
    commits_one: Commits,
    commits_many: Commits,
    delivery: DeliveryResult,
}

/// Single-row commits over the rounds, with the database server's CPU and WAL flushes when
/// they were read.
#[derive(Default)]
struct Commits {
    commits: u64,
    elapsed: Duration,
    database: DatabaseReading,
}

impl Commits {
    fn add(&mut self, rate: CommitRate, used: DatabaseReading) {
        self.database = if self.elapsed.is_zero() {
            used
        } else {
            DatabaseReading {
                cpu: self.database.cpu.zip(used.cpu).map(|(a, b)| a + b),
                wal_flushes: self
                    .database
                    .wal_flushes
                    .zip(used.wal_flushes)
                    .map(|(a, b)| a + b),
            }
        };
        self.commits += rate.commits;
        self.elapsed += rate.elapsed;
    }

    fn per_second(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }

    fn line(&self) -> String {
        let mut line = format!("{:>9.0} commit/s", self.per_second());
        if let Some(cpu) = self.database.cpu.filter(|_| self.commits > 0) {
            let per_commit = cpu.as_secs_f64() * 1e6 / self.commits as f64;
            line.push_str(&format!("  database CPU {per_commit:>5.1} µs/commit"));
        }
        if let Some(flushes) = self.database.wal_flushes.filter(|&flushes| flushes > 0) {
            let per_flush = self.commits as f64 / flushes as f64;
            line.push_str(&format!("  {per_flush:.1} commits/WAL flush"));
        }
        line
    }
}

/// The PostgreSQL server's CPU (postmaster and children, when it runs on this machine) and WAL
/// flushes (`pg_stat_wal`, over a connection of its own).
struct Probe {
    cpu: Option<CpuClock>,
    postmaster: Option<u32>,
    client: Client,
}

impl DatabaseProbe for Probe {
    fn read(&self) -> Pin<Box<dyn Future<Output = DatabaseReading> + '_>> {
        Box::pin(async move {
            let cpu = self
                .cpu
                .zip(self.postmaster)
                .and_then(|(clock, pid)| clock.tree_time(pid).ok());
            DatabaseReading {
                cpu,
                wal_flushes: postgres::wal_flushes(&self.client).await,
            }
        })
    }
}

async fn run(args: Args) -> anyhow::Result<u64> {
    anyhow::ensure!(
        args.watch_rate > 0.0 && args.watch_rate.is_finite(),
        "--watch-rate must be a positive number"
    );
    let server_url = std::env::var(postgres::SERVER_URL_VARIABLE).with_context(|| {
        format!(
            "{} is not set: run pg-bench under scripts/with-postgres.sh --durable, or set it to \
             a superuser URL of a server's `postgres` database",
            postgres::SERVER_URL_VARIABLE
        )
    })?;
    let admin = postgres::connect(&server_url, "the server's `postgres` database").await?;
    let facts = ServerFacts::read(&admin).await?;
    anyhow::ensure!(
        facts.durable(),
        "PostgreSQL {} runs with fsync={} synchronous_commit={}: commits are not durable, and \
         durable commits are what pg-bench measures (scripts/with-postgres.sh --durable starts a \
         server with both on)",
        facts.version,
        facts.fsync,
        facts.synchronous_commit
    );
    let token = tokens::generate();
    let run_tag = token[..8].to_owned();
    let database =
        BenchDatabase::create(admin, &server_url, &format!("order_status_bench_{run_tag}")).await?;
    let outcome = bench(&args, &facts, &database, &token).await;
    let name = database.name.clone();
    if args.keep_database {
        println!("kept database {name}");
        return outcome;
    }
    let dropped = database.drop_database().await;
    match (outcome, dropped) {
        (Ok(failed), Ok(())) => Ok(failed),
        (Ok(_), Err(error)) => Err(error.into()),
        (Err(error), Ok(())) => Err(error),
        (Err(error), Err(drop_error)) => {
            eprintln!("pg-bench: also, dropping database {name} failed: {drop_error}");
            Err(error)
        }
    }
}

async fn bench(
    args: &Args,
    facts: &ServerFacts,
    database: &BenchDatabase,
    token: &str,
) -> anyhow::Result<u64> {
    let order_service = setup::sibling_binary(args.order_service.as_deref(), "order-service")?;
    let bare_server = setup::sibling_binary(args.bare_server.as_deref(), "bare-server")?;
    let Scratch { dir, tokens_file } =
        Scratch::new("order-status-pg-bench-", args.work_dir.as_deref(), token)?;

    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        replicas.push(
            ServerProcess::start(
                "order-service",
                &order_service,
                order_service_command(&order_service, &database.url, &tokens_file, args),
                dir.path().join(format!("order-service-{name}.log")),
            )
            .await
            .with_context(|| format!("starting replica {}", name.to_uppercase()))?,
        );
    }
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
            eprintln!("pg-bench: no CPU accounting: {error}");
            None
        }
    };
    let postmaster = facts.postmaster_pid();
    let probe = Probe {
        cpu,
        postmaster,
        client: postgres::connect(&database.url, "the benchmark database (probe)").await?,
    };

    let authorization = format!("Bearer {token}").parse()?;
    let target = |server: &ServerProcess| Target {
        url: format!("http://{}", server.addr),
        ca_certificate_pem: None,
        authorization: Clone::clone(&authorization),
        server_pid: server.pid,
    };
    let replica_targets = [target(&replicas[0]), target(&replicas[1])];
    let bare_target = target(&bare);
    let run_tag = &token[..8];

    let in_flight = args.connections * args.streams;
    let creates = args.calls.contains(&Call::CreateOrder);
    let baseline_clients = if creates {
        postgres::connect_many(&database.url, in_flight).await?
    } else {
        postgres::connect_many(&database.url, 1).await?
    };
    postgres::create_baseline_table(&baseline_clients[0]).await?;

    let settings = LoadSettings {
        connections: args.connections,
        streams_per_connection: args.streams,
        warmup: args.warmup,
        measure: args.measure,
        call_deadline: args.call_deadline,
    };
    print_header(
        args,
        facts,
        &order_service,
        &replicas,
        &bare,
        database,
        postmaster,
    );

    let mut totals = Totals::default();
    let mut seeded = 0_u64;
    for round in 1..=args.rounds {
        let forward = round % 2 == 1;
        println!("round {round}/{}", args.rounds);
        if args.calls.contains(&Call::GetOrder) {
            // Fresh orders every round, created on replica A and read there, as bench does.
            let order_ids: Arc<[String]> = load::seed_orders(
                &replica_targets[0],
                args.seed_orders,
                &format!("seed-{run_tag}-r{round}"),
                args.call_deadline,
            )
            .await
            .context("creating the orders GetOrder reads")?
            .into();
            seeded += order_ids.len() as u64;
            let workload = Workload::GetOrder { order_ids };
            for bare_side in if forward {
                [true, false]
            } else {
                [false, true]
            } {
                let mut result = if bare_side {
                    load::run(&bare_target, &workload, settings, cpu).await?
                } else {
                    let mut result = load::run_spread(
                        &replica_targets[..1],
                        &workload,
                        settings,
                        cpu,
                        Some(&probe),
                    )
                    .await?;
                    // Reads commit nothing: the flushes in the window are other work's.
                    result.wal_flushes = None;
                    result
                };
                let (label, total) = if bare_side {
                    ("GetOrder     bare tonic      ", &mut totals.get_bare)
                } else {
                    ("GetOrder     order-service A ", &mut totals.get_real)
                };
                print_round(label, "req", &mut result);
                total.merge(&result);
            }
        }
        if creates {
            let mut writes = [
                Write::OneReplica,
                Write::TwoReplicas,
                Write::OneClient,
                Write::ManyClients,
            ];
            if !forward {
                writes.reverse();
            }
            for write in writes {
                match write {
                    Write::OneReplica | Write::TwoReplicas => {
                        let (targets, label, total) = match write {
                            Write::OneReplica => (
                                &replica_targets[..1],
                                "CreateOrder  1 replica       ",
                                &mut totals.create_one,
                            ),
                            _ => (
                                &replica_targets[..],
                                "CreateOrder  2 replicas      ",
                                &mut totals.create_two,
                            ),
                        };
                        let workload = Workload::CreateOrder {
                            key_prefix: format!("bench-{run_tag}-r{round}-{}", targets.len()),
                        };
                        let mut result =
                            load::run_spread(targets, &workload, settings, cpu, Some(&probe))
                                .await?;
                        print_round(label, "create", &mut result);
                        total.merge(&result);
                    }
                    Write::OneClient | Write::ManyClients => {
                        let (clients, label, total) = match write {
                            Write::OneClient => (
                                &baseline_clients[..1],
                                "single-row commits, 1 client ",
                                &mut totals.commits_one,
                            ),
                            _ => (
                                &baseline_clients[..],
                                "single-row commits, N clients",
                                &mut totals.commits_many,
                            ),
                        };
                        let mut round_total = Commits::default();
                        let (rate, cpu_used) = commit_window(
                            clients,
                            args,
                            &format!("r{round}-{}", clients.len()),
                            &probe,
                        )
                        .await?;
                        round_total.add(rate, cpu_used);
                        println!("  {label}  {}", round_total.line());
                        total.add(rate, cpu_used);
                    }
                }
            }
        }
        if args.calls.contains(&Call::Watch) {
            let paced = PacedSettings {
                rate_per_second: args.watch_rate,
                warmup: args.warmup,
                measure: args.measure,
                call_deadline: args.call_deadline,
                settle: Duration::from_secs(5),
            };
            let result = delivery::measure(
                &replica_targets[0],
                &replica_targets[1],
                paced,
                &format!("watch-{run_tag}-r{round}"),
            )
            .await
            .context("measuring delivery from replica A to a watcher on replica B")?;
            print_delivery("  ", &result);
            totals.delivery.merge(&result);
        }
    }

    let failed = print_summary(&mut totals, args, in_flight);
    println!("  {}", load_average());
    drop(baseline_clients);
    let mut log_bytes = 0;
    for replica in replicas {
        log_bytes += std::fs::metadata(&replica.log)
            .map(|m| m.len())
            .unwrap_or(0);
        replica.stop().await?;
    }
    bare.stop().await?;
    let stored = count_stored_orders(&database.url).await?;
    let acknowledged =
        seeded + totals.create_one.ok + totals.create_two.ok + totals.delivery.acknowledged;
    println!(
        "\nthe database holds {stored} orders after both replicas were killed (seeded + \
         acknowledged in the windows: {acknowledged}, plus warm-up, probe and in-flight creates); \
         the replicas' stderr logs grew to {:.1} MB",
        log_bytes as f64 / 1e6
    );
    if args.keep_work_dir {
        println!("kept {}", dir.keep().display());
    }
    if stored < acknowledged {
        anyhow::bail!("fewer orders in the database ({stored}) than acknowledged ({acknowledged})");
    }
    Ok(failed)
}

/// One window of single-row commits by `clients`, with the database's CPU over it.
async fn commit_window(
    clients: &[Arc<Client>],
    args: &Args,
    tag: &str,
    probe: &Probe,
) -> anyhow::Result<(CommitRate, DatabaseReading)> {
    // The warm-up is a window of its own, so the CPU readings frame the measured one.
    if !args.warmup.is_zero() {
        postgres::single_row_commits(clients, &format!("{tag}-warm"), Duration::ZERO, args.warmup)
            .await?;
    }
    let before = probe.read().await;
    let rate = postgres::single_row_commits(clients, tag, Duration::ZERO, args.measure).await?;
    let after = probe.read().await;
    Ok((rate, after.since(before)))
}

fn order_service_command(binary: &Path, url: &str, tokens: &Path, args: &Args) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(url)
        .arg("--tokens-file")
        .arg(tokens)
        .args(&args.service_args);
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
    command
}

fn print_header(
    args: &Args,
    facts: &ServerFacts,
    order_service: &Path,
    replicas: &[ServerProcess],
    bare: &ServerProcess,
    database: &BenchDatabase,
    postmaster: Option<u32>,
) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "order-status PostgreSQL benchmark: {} connections x {} concurrent calls per load, {:?} \
         warm-up + {:?} measured per window, {} rounds, {cpus} CPUs (client, servers and \
         PostgreSQL share them)",
        args.connections, args.streams, args.warmup, args.measure, args.rounds
    );
    println!(
        "PostgreSQL {}: fsync={} synchronous_commit={} wal_sync_method={} commit_delay={} \
         max_connections={}, database {} ({})",
        facts.version,
        facts.fsync,
        facts.synchronous_commit,
        facts.wal_sync_method,
        facts.commit_delay,
        facts.max_connections,
        database.name,
        match postmaster {
            Some(pid) => format!("its CPU: postmaster {pid} and its children"),
            None => "its CPU not measured: no readable postmaster.pid on this machine".into(),
        }
    );
    for (replica, name) in replicas.iter().zip(["A", "B"]) {
        println!(
            "order-service {name} {} at {} (auth on, RUST_LOG={}{}, stderr -> {})",
            order_service.display(),
            replica.addr,
            args.service_rust_log
                .as_deref()
                .unwrap_or("unset (default info)"),
            if args.service_args.is_empty() {
                String::new()
            } else {
                format!(", args {}", args.service_args.join(" "))
            },
            replica.log.display()
        );
    }
    println!(
        "bare tonic      at {} (same proto, canned answers, no auth, no storage, TCP_NODELAY)",
        bare.addr
    );
    println!(
        "2 replicas: the load's connections alternate between A and B; server CPU is both \
         replicas'; N clients = connections x streams = {}",
        args.connections * args.streams
    );
    println!("only calls that ended with grpc-status 0 and the expected order are counted");
    println!("{}\n", load_average());
}

/// The machine's load averages, to judge how much other work shared the cores.
fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => {
            let averages: Vec<&str> = text.split_whitespace().take(3).collect();
            format!(
                "load average (1, 5, 15 min): {} (includes this run's own processes)",
                averages.join(" ")
            )
        }
        Err(error) => format!("load average unknown: /proc/loadavg: {error}"),
    }
}

fn print_round(label: &str, unit: &str, result: &mut LoadResult) {
    let figures = Figures::of(result);
    println!("  {label} {}", figures.line(unit));
    for line in error_lines(result) {
        println!("      {line}");
    }
}

fn print_delivery(indent: &str, result: &DeliveryResult) {
    let mut send = result.send_to_delivery_us.clone();
    let mut ack = result.ack_to_delivery_us.clone();
    let mut creates = result.create_latencies_us.clone();
    send.sort_unstable();
    ack.sort_unstable();
    creates.sort_unstable();
    let p = |sorted: &[i64], q| delivery::signed_millis(delivery::percentile_signed(sorted, q));
    let create_p = |q| millis(order_status_bench::report::percentile(&creates, q));
    println!(
        "{indent}A -> watcher on B  {:>6.0} create/s acknowledged (create p50 {} p99 {}); \
         delivery from A's send p50 {} p99 {}, from A's ack p50 {} p99 {}; undelivered {}, out \
         of order {}, failed creates {}",
        result.acknowledged as f64 / result.window.as_secs_f64(),
        create_p(0.50),
        create_p(0.99),
        p(&send, 0.50),
        p(&send, 0.99),
        p(&ack, 0.50),
        p(&ack, 0.99),
        result.undelivered,
        result.out_of_order,
        result.failed_count()
    );
    for (code, tally) in &result.failed {
        println!("{indent}    {code} x{}: {}", tally.count, tally.example);
    }
}

fn print_summary(totals: &mut Totals, args: &Args, in_flight: usize) -> u64 {
    println!("\nall {} rounds", args.rounds);
    let mut failed = 0;
    if args.calls.contains(&Call::GetOrder) {
        let bare = Figures::of(&mut totals.get_bare);
        let real = Figures::of(&mut totals.get_real);
        println!("  GetOrder     bare tonic      {}", bare.line("req"));
        println!("  GetOrder     order-service A {}", real.line("req"));
        println!(
            "  GetOrder     order-service (PostgreSQL) / bare tonic: {:.2} x requests/s, p50 \
             x{:.2}, p99 x{:.2}{}",
            real.per_second / bare.per_second,
            ratio(real.p50, bare.p50),
            ratio(real.p99, bare.p99),
            match (real.server_cpu_per_call, bare.server_cpu_per_call) {
                (Some(r), Some(b)) => format!(", server CPU per call x{:.2}", ratio(r, b)),
                _ => String::new(),
            }
        );
        failed += bare.errors + real.errors;
    }
    if args.calls.contains(&Call::CreateOrder) {
        let one = Figures::of(&mut totals.create_one);
        let two = Figures::of(&mut totals.create_two);
        let single = totals.commits_one.per_second();
        let many = totals.commits_many.per_second();
        println!("  CreateOrder  1 replica       {}", one.line("create"));
        println!("  CreateOrder  2 replicas      {}", two.line("create"));
        println!(
            "  single-row commits, 1 client  {}",
            totals.commits_one.line()
        );
        println!(
            "  single-row commits, {in_flight} clients  {}",
            totals.commits_many.line()
        );
        for (label, figures) in [("1 replica ", &one), ("2 replicas", &two)] {
            println!(
                "  CreateOrder  {label} durable creates/s / single-row commits/s: {:.2} x (1 \
                 client), {:.2} x ({in_flight} clients)",
                figures.per_second / single,
                figures.per_second / many
            );
        }
        let best = one.per_second.max(two.per_second) / single;
        println!(
            "  aim creates >= 5 x the single-row commit rate (1 client): {} ({best:.1} x at best)",
            if best >= 5.0 {
                "reached"
            } else {
                "NOT reached"
            }
        );
        failed += one.errors + two.errors;
    }
    if args.calls.contains(&Call::Watch) {
        print_delivery("  ", &totals.delivery);
        let p99 = |latencies: &[i64]| {
            let mut sorted = latencies.to_vec();
            sorted.sort_unstable();
            (!sorted.is_empty()).then(|| delivery::percentile_signed(&sorted, 0.99))
        };
        let from_ack = p99(&totals.delivery.ack_to_delivery_us);
        let from_send = p99(&totals.delivery.send_to_delivery_us);
        let shown = |p99: Option<i64>| p99.map_or("none delivered".into(), delivery::signed_millis);
        println!(
            "  aim cross-replica p99 < 50 ms, from commit on A (its acknowledgement) to B's \
             watcher: {} ({}; from A's send, adding the create's own queueing and commit: {})",
            if from_ack.is_some_and(|p99| p99 < 50_000) {
                "reached"
            } else {
                "NOT reached"
            },
            shown(from_ack),
            shown(from_send)
        );
        failed += totals.delivery.failed_count()
            + totals.delivery.undelivered
            + totals.delivery.out_of_order;
    }
    failed
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

async fn count_stored_orders(url: &str) -> anyhow::Result<u64> {
    let client = postgres::connect(url, "the benchmark database (counting orders)").await?;
    let row = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .context("counting the stored orders")?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
