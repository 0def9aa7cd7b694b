//! `webhook-bench`: webhook deliveries from a release order-service (fresh SQLite file,
//! `--webhook-allow-networks 127.0.0.0/8`) to an in-process HTTP receiver answering 204. For
//! each endpoint count it registers that many endpoints on the receiver, creates orders (one
//! `order.created` event each) at a paced rate, or as fast as it can with `--rate 0`, for a
//! window, waits until every event reached every endpoint, and prints deliveries/s, the delay
//! from the create's acknowledgement (the client's nearest view of the commit) and from its
//! send to the receiver's arrival, duplicates and out-of-order arrivals per endpoint, and the
//! server's CPU per delivery.
//!
//! Run: `cargo build --release -p order-service -p order-status-bench &&
//! target/release/webhook-bench --endpoints 1,10,100 --rate 1000 --duration 5s`

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser;
use order_status_bench::canned;
use order_status_bench::cpu::CpuClock;
use order_status_bench::processes::ServerProcess;
use order_status_bench::report::{millis, percentile};
use order_status_bench::tokens;
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use orders_proto::v1::webhook_service_client::WebhookServiceClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Benchmark webhook delivery: deliveries/s and commit-to-2xx latency for 1, 10 and 100
/// endpoints on one local receiver.
#[derive(Debug, Parser)]
struct Args {
    /// Endpoint counts to measure, one run (fresh service and database) each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    endpoints: Vec<usize>,
    /// Creates (= events) per second; 0 creates as fast as --in-flight calls allow.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long orders are created for.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Most create calls in flight at once (the paced rate falls behind if they are all busy).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// HTTP/2 connections the creates are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Longest wait after the window for the last deliveries.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// RUST_LOG for order-service [default: warn, so per-call log lines cost nothing].
    #[arg(long, default_value = "warn")]
    service_rust_log: String,
    /// One more argument for order-service (repeat for several).
    #[arg(long = "service-arg", allow_hyphen_values = true)]
    service_args: Vec<String>,
    /// The order-service binary [default: next to this binary].
    #[arg(long)]
    order_service: Option<PathBuf>,
    /// Where the temporary directory (database, tokens, server log) is made [default: the
    /// system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the temporary directories instead of deleting them.
    #[arg(long)]
    keep_work_dir: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(problems) => {
            eprintln!(
                "webhook-bench: {problems} failed creates, missing, duplicate or out-of-order \
                 deliveries (see above)"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("webhook-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<u64> {
    anyhow::ensure!(
        args.rate >= 0.0 && args.rate.is_finite(),
        "--rate must be zero (unpaced) or a positive number"
    );
    anyhow::ensure!(
        args.in_flight > 0 && args.connections > 0,
        "--in-flight and --connections must be positive"
    );
    let order_service = match &args.order_service {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("finding this binary's directory")?
            .with_file_name("order-service"),
    };
    let clock = CpuClock::new().context("reading the clock tick rate for CPU accounting")?;
    println!(
        "webhook-bench: order-service {} on SQLite; creates {} for {:?}; {} in flight over {} \
         connections",
        order_service.display(),
        if args.rate > 0.0 {
            format!("paced at {}/s", args.rate)
        } else {
            "unpaced".to_owned()
        },
        args.duration,
        args.in_flight,
        args.connections
    );
    let mut problems = 0;
    for &endpoints in &args.endpoints {
        anyhow::ensure!(endpoints > 0, "--endpoints must all be positive");
        problems += one_run(&args, &order_service, clock, endpoints)
            .await
            .with_context(|| format!("the run with {endpoints} endpoints"))?;
    }
    Ok(problems)
}

/// One delivery as the receiver saw it.
struct Arrival {
    at: Instant,
    endpoint: usize,
    webhook_id: String,
    sequence: u64,
    order_id: String,
}

/// What the receiver records; shared with its handler.
#[derive(Default)]
struct Received {
    arrivals: Mutex<Vec<Arrival>>,
    /// Requests whose path or body could not be read (answered 400).
    unreadable: Mutex<Vec<String>>,
}

async fn receive(
    State(received): State<Arc<Received>>,
    UrlPath(endpoint): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    match read_delivery(&endpoint, &headers, &body) {
        Ok((endpoint, webhook_id, sequence, order_id)) => {
            lock(&received.arrivals).push(Arrival {
                at,
                endpoint,
                webhook_id,
                sequence,
                order_id,
            });
            StatusCode::NO_CONTENT
        }
        Err(problem) => {
            lock(&received.unreadable).push(problem);
            StatusCode::BAD_REQUEST
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The endpoint number (from the path `eN`), `webhook-id`, `data.sequence` and
/// `data.order.orderId` of one delivery.
fn read_delivery(
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(usize, String, u64, String), String> {
    let endpoint = path
        .strip_prefix('e')
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| format!("path /{path} is not /eN"))?;
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .ok_or("no webhook-id header")?
        .to_owned();
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| format!("body is not JSON: {error}"))?;
    let data = &json["data"];
    // proto3 JSON writes uint64 as a string; accept a number too.
    let sequence = match &data["sequence"] {
        serde_json::Value::String(text) => text.parse::<u64>().ok(),
        value => value.as_u64(),
    }
    .ok_or("no data.sequence")?;
    let order_id = data["order"]["orderId"]
        .as_str()
        .or_else(|| data["order"]["order_id"].as_str())
        .ok_or("no data.order.orderId")?
        .to_owned();
    Ok((endpoint, webhook_id, sequence, order_id))
}

/// When one create was sent and acknowledged.
#[derive(Clone, Copy)]
struct Create {
    sent: Instant,
    acknowledged: Instant,
}

/// What the creates of one window did.
#[derive(Default)]
struct Creates {
    by_order: HashMap<String, Create>,
    failed: u64,
    first_failure: Option<String>,
}

async fn one_run(
    args: &Args,
    order_service: &Path,
    clock: CpuClock,
    endpoints: usize,
) -> anyhow::Result<u64> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("webhook-bench-");
    let dir = match &args.work_dir {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .context("creating the temporary directory")?;
    let token = tokens::generate();
    let tokens_file = dir.path().join("tokens.toml");
    tokens::write_tokens_file_with_scopes(
        &tokens_file,
        &token,
        &["orders.read", "orders.write", "webhooks.admin"],
    )
    .with_context(|| format!("writing {}", tokens_file.display()))?;
    let database = dir.path().join("orders.db");
    let mut command = Command::new(order_service);
    command
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(format!("sqlite://{}", database.display()))
        .arg("--tokens-file")
        .arg(&tokens_file)
        .arg("--webhook-allow-networks")
        .arg("127.0.0.0/8")
        .args(&args.service_args);
    // Only the flags above and RUST_LOG configure the service, nothing from the caller's
    // environment (an exporter, a metrics endpoint, other webhook settings).
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("ORDER_SERVICE_")
            || name_text.starts_with("OTEL_")
            || name_text == "LOG_FORMAT"
        {
            command.env_remove(&name);
        }
    }
    command.env("RUST_LOG", &args.service_rust_log);
    let server = ServerProcess::start(
        "order-service",
        order_service,
        command,
        dir.path().join("order-service.log"),
    )
    .await?;

    // The receiver.
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the receiver on 127.0.0.1:0")?;
    let receiver_addr = listener.local_addr().context("the receiver's address")?;
    let app = Router::new()
        .route("/{endpoint}", post(receive))
        .with_state(received.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let authorization: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .context("the token as a header value")?;
    let url = format!("http://{}", server.addr);
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(
            Endpoint::from_shared(url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to order-service at {url}"))?,
        );
    }
    let mut admin = WebhookServiceClient::new(channels[0].clone());
    for n in 0..endpoints {
        let mut request = tonic::Request::new(pb::CreateWebhookEndpointRequest {
            request_id: format!("webhook-bench-endpoint-{n}"),
            url: format!("http://{receiver_addr}/e{n}"),
            event_types: Vec::new(),
            description: format!("webhook-bench endpoint {n}"),
        });
        request
            .metadata_mut()
            .insert("authorization", authorization.clone());
        admin
            .create_webhook_endpoint(request)
            .await
            .with_context(|| format!("creating endpoint {n}"))?;
    }

    let cpu_before = clock.process_time(server.pid)?;
    let start = Instant::now();
    let creates = create_orders(args, &channels, &authorization, start).await;
    let window_end = Instant::now();
    let created = creates.by_order.len();
    let expected = created * endpoints;
    // Wait for the last deliveries.
    let drain_deadline = window_end + args.drain_timeout;
    loop {
        let arrived = lock(&received.arrivals).len();
        if arrived >= expected || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu_used = clock.process_time(server.pid)? - cpu_before;
    receiver.abort();
    let arrivals = std::mem::take(&mut *lock(&received.arrivals));
    let unreadable = std::mem::take(&mut *lock(&received.unreadable));

    let problems = report(
        args,
        endpoints,
        &creates,
        &arrivals,
        &unreadable,
        start,
        window_end,
        cpu_used,
    );
    drop(server);
    if args.keep_work_dir {
        println!("  kept {}", dir.keep().display());
    }
    Ok(problems)
}

/// Creates orders for `args.duration` from `start`, paced at `args.rate` (or unpaced), at most
/// `args.in_flight` at once, round-robin over `channels`.
async fn create_orders(
    args: &Args,
    channels: &[Channel],
    authorization: &MetadataValue<Ascii>,
    start: Instant,
) -> Creates {
    let end = start + args.duration;
    let slots = Arc::new(Semaphore::new(args.in_flight));
    let creates = Arc::new(Mutex::new(Creates::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0u64.. {
        if args.rate > 0.0 {
            let due = start + Duration::from_secs_f64(n as f64 / args.rate);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        if Instant::now() >= end {
            break;
        }
        let mut client = OrderServiceClient::new(channels[n as usize % channels.len()].clone());
        let mut request = tonic::Request::new(canned::create_request(format!("webhook-bench-{n}")));
        request.set_timeout(Duration::from_secs(10));
        request
            .metadata_mut()
            .insert("authorization", authorization.clone());
        let creates = creates.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = client.create_order(request).await;
            let acknowledged = Instant::now();
            drop(slot);
            let mut creates = lock(&creates);
            match outcome {
                Ok(response) => {
                    creates.by_order.insert(
                        response.into_inner().order_id,
                        Create { sent, acknowledged },
                    );
                }
                Err(status) => {
                    creates.failed += 1;
                    creates.first_failure.get_or_insert_with(|| {
                        format!("{:?}: {}", status.code(), status.message())
                    });
                }
            }
        });
        // Reap finished tasks so the set does not grow with the window.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    std::mem::take(&mut *lock(&creates))
}

/// Prints one run's figures; returns the number of problems (failed creates, missing,
/// duplicate, out-of-order or unreadable deliveries).
#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    endpoints: usize,
    creates: &Creates,
    arrivals: &[Arrival],
    unreadable: &[String],
    start: Instant,
    window_end: Instant,
    cpu_used: Duration,
) -> u64 {
    let created = creates.by_order.len();
    let window = window_end - start;
    let last_arrival = arrivals.iter().map(|a| a.at).max().unwrap_or(window_end);
    let span = last_arrival.max(window_end) - start;
    let deliveries = arrivals.len();
    println!(
        "\n{endpoints} endpoint(s), {} creates/s asked:",
        if args.rate > 0.0 {
            format!("{}", args.rate)
        } else {
            "unpaced".to_owned()
        }
    );
    println!(
        "  creates: {created} acknowledged in {:.2}s = {:.0}/s, {} failed{}",
        window.as_secs_f64(),
        created as f64 / window.as_secs_f64(),
        creates.failed,
        creates
            .first_failure
            .as_ref()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    println!(
        "  deliveries: {deliveries} of {} expected; {:.0}/s from the first create to the last \
         arrival ({:.2}s, the last {} after the window)",
        created * endpoints,
        deliveries as f64 / span.as_secs_f64(),
        span.as_secs_f64(),
        millis(last_arrival.saturating_duration_since(window_end))
    );

    let mut from_ack = Vec::with_capacity(deliveries);
    let mut from_send = Vec::with_capacity(deliveries);
    let mut before_ack = 0u64;
    let mut unknown_order = 0u64;
    let mut seen: Vec<HashMap<&str, u32>> = vec![HashMap::new(); endpoints];
    let mut last_sequence = vec![0u64; endpoints];
    let mut out_of_order = vec![0u64; endpoints];
    let mut bad_endpoint = 0u64;
    let mut arrivals_in_order: Vec<&Arrival> = arrivals.iter().collect();
    arrivals_in_order.sort_by_key(|a| a.at);
    for arrival in arrivals_in_order {
        match creates.by_order.get(&arrival.order_id) {
            Some(create) => {
                if arrival.at < create.acknowledged {
                    before_ack += 1;
                }
                from_ack.push(micros(
                    arrival.at.saturating_duration_since(create.acknowledged),
                ));
                from_send.push(micros(arrival.at.saturating_duration_since(create.sent)));
            }
            None => unknown_order += 1,
        }
        let Some(per_endpoint) = seen.get_mut(arrival.endpoint) else {
            bad_endpoint += 1;
            continue;
        };
        *per_endpoint.entry(arrival.webhook_id.as_str()).or_default() += 1;
        if arrival.sequence <= last_sequence[arrival.endpoint] {
            out_of_order[arrival.endpoint] += 1;
        }
        last_sequence[arrival.endpoint] = last_sequence[arrival.endpoint].max(arrival.sequence);
    }
    from_ack.sort_unstable();
    from_send.sort_unstable();
    println!(
        "  create acknowledged -> receiver: p50 {} p99 {} max {}  ({before_ack} arrived before \
         their create's acknowledgement, counted as 0)",
        millis(percentile(&from_ack, 0.50)),
        millis(percentile(&from_ack, 0.99)),
        millis(percentile(&from_ack, 1.0)),
    );
    println!(
        "  create sent -> receiver:         p50 {} p99 {} max {}",
        millis(percentile(&from_send, 0.50)),
        millis(percentile(&from_send, 0.99)),
        millis(percentile(&from_send, 1.0)),
    );
    let duplicates: u64 = seen
        .iter()
        .map(|ids| {
            ids.values()
                .map(|&n| u64::from(n.saturating_sub(1)))
                .sum::<u64>()
        })
        .sum();
    let endpoints_with_duplicates = seen
        .iter()
        .filter(|ids| ids.values().any(|&n| n > 1))
        .count();
    let total_out_of_order: u64 = out_of_order.iter().sum();
    let endpoints_out_of_order = out_of_order.iter().filter(|&&n| n > 0).count();
    let missing = (created * endpoints).saturating_sub(deliveries - duplicates as usize) as u64;
    let short_endpoints = seen.iter().filter(|ids| ids.len() < created).count();
    println!(
        "  per endpoint: {duplicates} duplicate deliveries (on {endpoints_with_duplicates} \
         endpoints), {total_out_of_order} out of sequence order (on {endpoints_out_of_order} \
         endpoints), {missing} missing (on {short_endpoints} endpoints)"
    );
    if unknown_order + bad_endpoint > 0 || !unreadable.is_empty() {
        println!(
            "  {unknown_order} deliveries of orders not acknowledged to this client, \
             {bad_endpoint} to unknown endpoints, {} unreadable{}",
            unreadable.len(),
            unreadable
                .first()
                .map(|u| format!(" (first: {u})"))
                .unwrap_or_default()
        );
    }
    if deliveries > 0 {
        println!(
            "  server CPU: {:.1} µs per delivery ({:.2}s over the run, creates included: {:.1} \
             µs per create)",
            micros_f(cpu_used) / deliveries as f64,
            cpu_used.as_secs_f64(),
            micros_f(cpu_used) / created.max(1) as f64,
        );
    }
    creates.failed
        + missing
        + duplicates
        + total_out_of_order
        + unknown_order
        + bad_endpoint
        + unreadable.len() as u64
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn micros_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
