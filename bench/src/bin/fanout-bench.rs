//! `fanout-bench`: the WatchOrders fan-out. Starts the release `order-service` (auth on, SQLite
//! on disk, default settings) and `bare-server` (the same fan-out the plain tonic way) pinned to
//! the server core(s), pins itself to the client core(s), opens `--watchers` live all-orders
//! watch streams on each, then in alternating rounds paces CreateOrder calls at a steady rate
//! against one server at a time and times every (event, watcher) delivery, checking that every
//! watcher receives every event exactly once and in order.
//!
//! Run: `cargo build --release -p order-service -p order-status-bench &&
//! target/release/fanout-bench`

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use order_status_bench::cpu::CpuClock;
use order_status_bench::delivery::{percentile_signed, signed_millis};
use order_status_bench::fanout::check::{SequenceAgreement, StreamProblems};
use order_status_bench::fanout::creates::{self, Pace, PacedCreates};
use order_status_bench::fanout::pinning;
use order_status_bench::fanout::watchers::Watchers;
use order_status_bench::load::{self, Target};
use order_status_bench::processes::ServerProcess;
use order_status_bench::report::{millis, percentile};
use order_status_bench::setup::{self, Scratch};
use order_status_bench::tokens;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Measure WatchOrders fan-out on order-service against bare tonic.
#[derive(Debug, Parser)]
struct Args {
    /// Live all-orders WatchOrders streams held open on each server.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Watch streams per HTTP/2 connection (order-service allows 1,024).
    #[arg(long, default_value_t = 1_000)]
    streams_per_connection: usize,
    /// CreateOrder calls sent per second (open loop: on a timer, not after the previous one).
    #[arg(long, default_value_t = 20.0)]
    creates_per_second: f64,
    /// Paced creates before each measured window.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Each measured window: creates sent in it are measured.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    measure: Duration,
    /// Rounds; each measures every server once, alternating which goes first.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Servers to measure (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bare,order-service"
    )]
    servers: Vec<Side>,
    /// Before opening the watchers, creates paced the same way for this long with no watcher,
    /// to learn the server CPU of a create alone (subtracted to show the fan-out's own cost);
    /// 0 skips it.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    creates_alone: Duration,
    /// How long after the last create's answer every watcher may take to receive every event.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Deadline sent with every create.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    call_deadline: Duration,
    /// Cores the servers run on (a `taskset` cpu list).
    #[arg(long, default_value = "0")]
    server_cores: String,
    /// Cores this client runs on (a `taskset` cpu list); it uses one runtime thread per core.
    #[arg(long, default_value = "1")]
    client_cores: String,
    /// RUST_LOG for order-service; unset means the service's default (info).
    #[arg(long)]
    service_rust_log: Option<String>,
    /// The order-service binary [default: next to this binary].
    #[arg(long)]
    order_service: Option<PathBuf>,
    /// The bare-server binary [default: next to this binary].
    #[arg(long)]
    bare_server: Option<PathBuf>,
    /// Where the temporary directory (SQLite file, logs, tokens) is made [default: the
    /// system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the temporary directory instead of deleting it at the end.
    #[arg(long)]
    keep_work_dir: bool,
}

/// A server measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Side {
    /// `bare-server`: tonic, a broadcast channel, one `pb::OrderEvent` per stream.
    Bare,
    /// The release `order-service`.
    OrderService,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Bare => "bare tonic   ",
            Side::OrderService => "order-service",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Before the runtime starts any thread: every thread made later inherits the mask.
    if let Err(error) = pinning::pin_this_process(&args.client_cores) {
        eprintln!("fanout-bench: {error}");
        return ExitCode::from(2);
    }
    let client_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fanout-bench: cannot start the tokio runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args, client_threads)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "fanout-bench: a create failed, or a watcher lost, duplicated or reordered an \
                 event, or a stream ended early (see above)"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("fanout-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// One server under test and what it has done so far.
struct Server {
    side: Side,
    process: ServerProcess,
    target: Target,
    /// The connection creates go over.
    creates: Channel,
    /// Server CPU of one create with no watcher open, when measured.
    create_cpu: Option<Duration>,
    watchers: Option<Watchers>,
    /// Acknowledged creates since the watchers opened: the events every watcher must receive.
    events: u64,
    totals: Figures,
}

/// What one or more measured rounds on one server produced.
#[derive(Debug, Default)]
struct Figures {
    /// Deliveries from the window's start until every watcher had every event.
    deliveries: u64,
    /// That time.
    elapsed: Duration,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
    /// Creates answered in that time (their own CPU is in `server_cpu`).
    creates_answered: u64,
    /// The CPU those creates would have used with no watcher, when known.
    creates_own_cpu: Option<Duration>,
    /// Latency of each create sent in the window, µs.
    create_latencies_us: Vec<u32>,
    /// Per delivery of a create sent in the window: µs from the create's send to arrival.
    from_send_us: Vec<i64>,
    /// The same from the create's acknowledgement (negative when the event came first).
    from_ack_us: Vec<i64>,
    /// Failed creates by code, with an example.
    failed_creates: BTreeMap<String, (u64, String)>,
    /// The watchers' problems so far (lost, duplicated, reordered, foreign events).
    problems: StreamProblems,
    /// Deliveries of a create's event with another sequence than other watchers saw.
    disagreements: u64,
    /// Deliveries of an event of a create not made on this server in this round.
    strays: u64,
    /// Rounds whose deliveries did not all arrive within the drain timeout.
    undrained: u64,
    /// Time the server's threads were runnable but waited for a CPU (other processes on its
    /// core): what wall-clock latencies include beyond the server's own work.
    server_waited: Option<Duration>,
}

impl Figures {
    fn merge(&mut self, other: Figures) {
        let first = self.elapsed.is_zero();
        self.deliveries += other.deliveries;
        self.elapsed += other.elapsed;
        let add = |a: Option<Duration>, b: Option<Duration>| {
            if first { b } else { Some(a? + b?) }
        };
        self.server_cpu = add(self.server_cpu, other.server_cpu);
        self.client_cpu = add(self.client_cpu, other.client_cpu);
        self.creates_own_cpu = add(self.creates_own_cpu, other.creates_own_cpu);
        self.server_waited = add(self.server_waited, other.server_waited);
        self.creates_answered += other.creates_answered;
        self.create_latencies_us.extend(other.create_latencies_us);
        self.from_send_us.extend(other.from_send_us);
        self.from_ack_us.extend(other.from_ack_us);
        for (code, (count, example)) in other.failed_creates {
            let mine = self.failed_creates.entry(code).or_insert((0, example));
            mine.0 += count;
        }
        // The watchers' problems are cumulative: the latest count is the total.
        self.problems = other.problems;
        self.disagreements += other.disagreements;
        self.strays += other.strays;
        self.undrained += other.undrained;
    }

    fn per_delivery(&self, cpu: Option<Duration>) -> Option<f64> {
        let cpu = cpu?;
        (self.deliveries > 0).then(|| cpu.as_secs_f64() * 1e6 / self.deliveries as f64)
    }

    fn server_us_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.server_cpu)
    }

    fn fan_out_us_per_delivery(&self) -> Option<f64> {
        let own = self.creates_own_cpu?;
        self.per_delivery(self.server_cpu.map(|cpu| cpu.saturating_sub(own)))
    }

    fn clean(&self) -> bool {
        self.failed_creates.is_empty()
            && self.problems.is_clean()
            && self.disagreements == 0
            && self.strays == 0
            && self.undrained == 0
    }

    fn print(&self, indent: &str, label: &str, client_threads: usize) {
        let seconds = self.elapsed.as_secs_f64();
        let mut cpu = String::new();
        if let Some(us) = self.server_us_per_delivery() {
            cpu = format!("  server CPU {us:.2} µs/delivery");
            if let Some(fan_out) = self.fan_out_us_per_delivery() {
                cpu += &format!(" ({fan_out:.2} without the creates' own)");
            }
            if let Some(server) = self.server_cpu {
                cpu += &format!(
                    " = {:.0}% of a core",
                    server.as_secs_f64() / seconds * 100.0
                );
            }
            if let Some(waited) = self.server_waited {
                cpu += &format!(
                    "; it waited for a CPU {:.0}% of the time",
                    waited.as_secs_f64() / seconds * 100.0
                );
            }
        }
        println!(
            "{indent}{label}  {:>9.0} deliveries/s ({} in {seconds:.2}s){cpu}",
            self.deliveries as f64 / seconds,
            self.deliveries
        );
        let mut latencies = self.create_latencies_us.clone();
        latencies.sort_unstable();
        let mut from_send = self.from_send_us.clone();
        from_send.sort_unstable();
        let mut from_ack = self.from_ack_us.clone();
        from_ack.sort_unstable();
        println!(
            "{indent}    CreateOrder p50 {} p99 {} ({} in the window)   delivery from send p50 {} \
             p99 {} max {}   from ack p50 {} p99 {} max {}",
            millis(percentile(&latencies, 0.50)),
            millis(percentile(&latencies, 0.99)),
            latencies.len(),
            signed_millis(percentile_signed(&from_send, 0.50)),
            signed_millis(percentile_signed(&from_send, 0.99)),
            signed_millis(from_send.last().copied().unwrap_or(0)),
            signed_millis(percentile_signed(&from_ack, 0.50)),
            signed_millis(percentile_signed(&from_ack, 0.99)),
            signed_millis(from_ack.last().copied().unwrap_or(0)),
        );
        if let Some(client) = self.client_cpu {
            let share = client.as_secs_f64() / seconds / client_threads as f64 * 100.0;
            let saturated = if share > 85.0 {
                "  CLIENT SATURATED: the figures measure the client too"
            } else {
                ""
            };
            println!(
                "{indent}    client CPU {:.2} µs/delivery = {share:.0}% of its {client_threads} core(s){saturated}",
                self.per_delivery(Some(client)).unwrap_or(0.0)
            );
        }
        for (code, (count, example)) in &self.failed_creates {
            println!("{indent}    failed creates {code} x{count}: {example}");
        }
        if !self.problems.is_clean() || self.disagreements > 0 || self.strays > 0 {
            println!(
                "{indent}    WATCHERS WRONG: missing {} extra {} out of order {} foreign {} \
                 sequence disagreements {} strays {}",
                self.problems.missing,
                self.problems.extra,
                self.problems.out_of_order,
                self.problems.foreign,
                self.disagreements,
                self.strays
            );
        }
        if self.undrained > 0 {
            println!(
                "{indent}    {} round(s) not drained within the drain timeout",
                self.undrained
            );
        }
    }
}

async fn run(args: Args, client_threads: usize) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.creates_per_second > 0.0,
        "--creates-per-second must be positive"
    );
    let clock_base = Instant::now();
    let order_service = setup::sibling_binary(args.order_service.as_deref(), "order-service")?;
    let bare_server = setup::sibling_binary(args.bare_server.as_deref(), "bare-server")?;
    let token = tokens::generate();
    let Scratch { dir, tokens_file } =
        Scratch::new("order-status-fanout-", args.work_dir.as_deref(), &token)?;
    let authorization: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let cpu = CpuClock::new()?;
    let run_tag = token[..8].to_owned();

    let mut servers = Vec::new();
    for &side in &args.servers {
        let process = match side {
            Side::OrderService => {
                let database = dir.path().join("orders.db");
                ServerProcess::start(
                    "order-service",
                    &order_service,
                    order_service_command(&order_service, &database, &tokens_file, &args),
                    dir.path().join("order-service.log"),
                )
                .await?
            }
            Side::Bare => {
                ServerProcess::start(
                    "bare-server",
                    &bare_server,
                    pinning::pinned_command(&args.server_cores, &bare_server),
                    dir.path().join("bare-server.log"),
                )
                .await?
            }
        };
        let target = Target {
            url: format!("http://{}", process.addr),
            ca_certificate_pem: None,
            authorization: authorization.clone(),
            server_pid: process.pid,
        };
        let creates = load::connect(&target).await?;
        servers.push(Server {
            side,
            process,
            target,
            creates,
            create_cpu: None,
            watchers: None,
            events: 0,
            totals: Figures::default(),
        });
    }
    print_header(&args, client_threads, &servers, dir.path());

    let pace = Pace {
        per_second: args.creates_per_second,
        warmup: args.warmup,
        measure: args.measure,
        deadline: args.call_deadline,
    };
    let mut next_number = 0u32;
    let mut all_clean = true;
    if !args.creates_alone.is_zero() {
        println!("creates alone (no watcher open), {:?}:", args.creates_alone);
        for server in &mut servers {
            let alone = Pace {
                measure: args.creates_alone,
                ..pace
            };
            let pid = server.process.pid;
            let start = Instant::now() + alone.warmup;
            let end = start + alone.measure;
            let sample = |at: Instant| async move {
                tokio::time::sleep_until(at.into()).await;
                CpuClock::live_threads_sched(pid)
            };
            let key_prefix = format!("fanout-{run_tag}-alone");
            let (made, before, after) = tokio::join!(
                creates::paced(
                    &server.target,
                    &server.creates,
                    alone,
                    next_number,
                    &key_prefix,
                    start,
                ),
                sample(start),
                sample(end)
            );
            next_number += u32::try_from(made.records.len())?;
            let answered = made
                .records
                .iter()
                .filter(|record| record.answered >= start && record.answered < end)
                .count();
            if made.failures().next().is_some() {
                all_clean = false;
            }
            if let (Ok(before), Ok(after), true) = (before, after, answered > 0) {
                let per_create = after.since(before).on_cpu / u32::try_from(answered)?;
                server.create_cpu = Some(per_create);
                println!(
                    "  {}  {answered} creates answered in the window, server CPU {:.1} µs/create \
                     (scheduler time of its live threads){}",
                    server.side.label(),
                    per_create.as_secs_f64() * 1e6,
                    failures_note(&made)
                );
            }
        }
    }

    for server in &mut servers {
        let opened = Instant::now();
        server.watchers = Some(
            Watchers::open(
                &server.target,
                args.watchers,
                args.streams_per_connection,
                clock_base,
            )
            .await
            .with_context(|| format!("opening watchers on {}", server.side.label().trim()))?,
        );
        println!(
            "{}  {} watch streams open (every one has its response headers) in {:.2}s",
            server.side.label(),
            args.watchers,
            opened.elapsed().as_secs_f64()
        );
    }

    for round in 1..=args.rounds {
        println!("round {round}/{}", args.rounds);
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for index in order {
            let server = &mut servers[index];
            let figures = measure_round(
                server,
                &args,
                pace,
                cpu,
                &mut next_number,
                clock_base,
                &format!("fanout-{run_tag}-r{round}"),
            )
            .await?;
            figures.print("  ", server.side.label(), client_threads);
            server.totals.merge(figures);
        }
    }

    println!("\nall {} rounds", args.rounds);
    for server in &servers {
        server
            .totals
            .print("  ", server.side.label(), client_threads);
        all_clean &= server.totals.clean();
        if let Some(watchers) = &server.watchers {
            let ended = watchers.ended_early();
            let count: u64 = ended.values().sum();
            let codes = ended
                .iter()
                .map(|(code, n)| format!("{code} x{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "    watch streams ended early: {count} of {}{}{codes}",
                watchers.count(),
                if count > 0 { ": " } else { "" }
            );
            all_clean &= count == 0;
        }
    }
    print_comparison(&servers);
    println!("  load average at the end: {}", load_average());

    for server in servers {
        if let Some(watchers) = server.watchers {
            watchers.close().await;
        }
        server.process.stop().await?;
    }
    if args.keep_work_dir {
        println!("kept {}", dir.keep().display());
    }
    Ok(all_clean)
}

fn failures_note(made: &PacedCreates) -> String {
    let failed = made.failures().count();
    if failed == 0 {
        return String::new();
    }
    let example = made
        .failures()
        .find_map(|record| record.outcome.as_ref().err())
        .map(|(code, message)| format!("{code}: {message}"))
        .unwrap_or_default();
    format!("; {failed} FAILED, e.g. {example}")
}

/// Paces creates against `server` (warm-up, then the window) and waits until every watcher has
/// every event; figures from the window's start to that moment.
async fn measure_round(
    server: &mut Server,
    args: &Args,
    pace: Pace,
    cpu: CpuClock,
    next_number: &mut u32,
    clock_base: Instant,
    key_prefix: &str,
) -> anyhow::Result<Figures> {
    let Some(watchers) = server.watchers.as_ref() else {
        anyhow::bail!("no watchers open on {}", server.side.label());
    };
    let pid = server.process.pid;
    let own_pid = std::process::id();
    let start = Instant::now() + pace.warmup;
    let at_start = async {
        tokio::time::sleep_until(start.into()).await;
        (
            cpu.process_time(pid).ok(),
            cpu.process_time(own_pid).ok(),
            watchers.delivered(),
            CpuClock::live_threads_sched(pid).ok(),
        )
    };
    let (made, (server_before, client_before, delivered_before, sched_before)) = tokio::join!(
        creates::paced(
            &server.target,
            &server.creates,
            pace,
            *next_number,
            key_prefix,
            start
        ),
        at_start
    );
    *next_number += u32::try_from(made.records.len())?;
    let acknowledged = made.records.iter().filter(|r| r.outcome.is_ok()).count() as u64;
    server.events += acknowledged;
    let drained = watchers.wait_for(server.events, args.drain_timeout).await;
    let finished = Instant::now();
    let server_after = cpu.process_time(pid).ok();
    let client_after = cpu.process_time(own_pid).ok();
    let delivered_after = watchers.delivered();
    let sched_after = CpuClock::live_threads_sched(pid).ok();

    let micros = |at: Instant| i64::try_from((at - clock_base).as_micros()).unwrap_or(i64::MAX);
    // Create number -> (sent µs, answered µs, sent in the window), for the acknowledged ones.
    let acknowledged_creates: HashMap<u32, (i64, i64, bool)> = made
        .records
        .iter()
        .filter(|record| record.outcome.is_ok())
        .map(|record| {
            let measured = record.sent >= made.start && record.sent < made.end;
            (
                record.number,
                (micros(record.sent), micros(record.answered), measured),
            )
        })
        .collect();
    let mut figures = Figures {
        deliveries: delivered_after - delivered_before,
        elapsed: finished - start,
        server_cpu: server_after
            .zip(server_before)
            .map(|(after, before)| after.saturating_sub(before)),
        client_cpu: client_after
            .zip(client_before)
            .map(|(after, before)| after.saturating_sub(before)),
        creates_answered: made
            .records
            .iter()
            .filter(|record| record.answered >= start)
            .count() as u64,
        undrained: u64::from(!drained),
        server_waited: sched_after
            .zip(sched_before)
            .map(|(after, before)| after.since(before).waiting),
        ..Figures::default()
    };
    figures.creates_own_cpu = server
        .create_cpu
        .map(|per_create| per_create * u32::try_from(figures.creates_answered).unwrap_or(0));
    for record in &made.records {
        let measured = record.sent >= made.start && record.sent < made.end;
        match &record.outcome {
            Ok(()) if measured => figures.create_latencies_us.push(
                u32::try_from((record.answered - record.sent).as_micros()).unwrap_or(u32::MAX),
            ),
            Ok(()) => {}
            Err((code, message)) => {
                let code = if measured {
                    code.clone()
                } else {
                    format!("{code} (warm-up)")
                };
                figures
                    .failed_creates
                    .entry(code)
                    .or_insert((0, message.clone()))
                    .0 += 1;
            }
        }
    }
    let mut agreement = SequenceAgreement::default();
    for arrival in watchers.take_arrivals() {
        agreement.observe(arrival.create, arrival.sequence);
        match acknowledged_creates.get(&arrival.create) {
            Some(&(sent, answered, measured)) => {
                if measured {
                    let at = i64::from(arrival.at_us);
                    figures.from_send_us.push(at - sent);
                    figures.from_ack_us.push(at - answered);
                }
            }
            None => figures.strays += 1,
        }
    }
    figures.disagreements = agreement.disagreements();
    let events = server.events;
    watchers.for_each_log(|log| figures.problems.add(log.check.problems(events)));
    Ok(figures)
}

fn print_comparison(servers: &[Server]) {
    let find = |side| servers.iter().find(|server| server.side == side);
    let (Some(bare), Some(real)) = (find(Side::Bare), find(Side::OrderService)) else {
        return;
    };
    if let (Some(real_us), Some(bare_us)) = (
        real.totals.server_us_per_delivery(),
        bare.totals.server_us_per_delivery(),
    ) {
        println!(
            "  order-service / bare tonic: server CPU per delivery x{:.2} ({real_us:.2} µs \
             against {bare_us:.2} µs)",
            real_us / bare_us
        );
    }
    let real = &real.totals;
    let mut latencies = real.create_latencies_us.clone();
    latencies.sort_unstable();
    let mut from_send = real.from_send_us.clone();
    from_send.sort_unstable();
    let create_p99 = percentile(&latencies, 0.99);
    let delivery_p99 =
        Duration::from_micros(u64::try_from(percentile_signed(&from_send, 0.99)).unwrap_or(0));
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let cpu = real.server_us_per_delivery().unwrap_or(f64::INFINITY);
    println!(
        "  aim (issue 12, order-service): <= 1 µs server CPU per delivery: {cpu:.2} µs, {}; \
         CreateOrder p99 < 10 ms: {}, {}; delivery p99 (from send) < 25 ms: {}, {}",
        verdict(cpu <= 1.0),
        millis(create_p99),
        verdict(create_p99 < Duration::from_millis(10)),
        millis(delivery_p99),
        verdict(delivery_p99 < Duration::from_millis(25)),
    );
}

fn order_service_command(
    binary: &Path,
    database: &Path,
    tokens: &Path,
    args: &Args,
) -> tokio::process::Command {
    let mut command = pinning::pinned_command(&args.server_cores, binary);
    command
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(format!("sqlite://{}", database.display()))
        .arg("--tokens-file")
        .arg(tokens);
    // The default limit of open watch streams is 10,000: raise it only when more are asked.
    if args.watchers > 10_000 {
        command.arg("--max-watchers").arg(args.watchers.to_string());
    }
    // Only the flags above and RUST_LOG below configure the service.
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

fn print_header(args: &Args, client_threads: usize, servers: &[Server], dir: &Path) {
    println!(
        "watch fan-out benchmark: {} live all-orders watch streams per server ({} per \
         connection), {} creates/s paced (open loop), {:?} warm-up + {:?} measured per window, \
         {} rounds",
        args.watchers,
        args.streams_per_connection,
        args.creates_per_second,
        args.warmup,
        args.measure,
        args.rounds
    );
    println!(
        "servers pinned to cores {}, this client to cores {} ({client_threads} runtime \
         thread(s)); files in {}",
        args.server_cores,
        args.client_cores,
        dir.display()
    );
    println!(
        "load average at the start: {} (other processes on the pinned cores stretch every \
         latency; the share of time the server waited for its CPU is printed per round)",
        load_average()
    );
    for server in servers {
        println!(
            "{}  pid {} at {} (stderr -> {})",
            server.side.label(),
            server.process.pid,
            server.process.addr,
            server.process.log.display()
        );
    }
    println!(
        "per round: deliveries/s and server CPU per delivery from the window's start until every \
         watcher had every event; latencies of the creates sent in the window and of their \
         deliveries\n"
    );
}

/// The first three fields of `/proc/loadavg`, or why they could not be read.
fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => text
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        Err(error) => format!("unknown ({error})"),
    }
}
