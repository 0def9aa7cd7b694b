//! `sse-scale`: how `status-client serve` holds up under many Server-Sent Event clients. Starts
//! a real order-service and gateway (the binaries of this build profile), then for each count
//! of event-stream clients: opens them, measures `GET /v1/orders/{id}` latency through the
//! gateway while they are open (the ratio to the same measurement with none open is the
//! figure), creates orders and counts how many of the expected events every client received.
//!
//! Run: `cargo build --release -p order-service -p status-client -p order-status-tests &&
//! target/release/sse-scale` (or the debug builds with `target/debug/sse-scale`; then compare
//! only the ratios). Needs a file limit above twice the largest client count (`ulimit -n`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use order_status_tests::order_service_process::{OrderServiceProcess, WRITER_TOKEN};
use order_status_tests::status_client_process::{
    ServeProcess, SseStream, StatusClientCli, http_request,
};

/// Measure the gateway under many event-stream clients.
#[derive(Debug, Parser)]
struct Args {
    /// Counts of all-orders event-stream clients (one token: they share one upstream watch).
    #[arg(long, value_delimiter = ',', default_value = "0,1000,5000,10000")]
    all_orders: Vec<usize>,
    /// One-order event-stream clients, each on a different order (fed from the caller's one
    /// all-orders upstream watch, after a short watch each for the order's current state); 0
    /// skips this part.
    #[arg(long, default_value_t = 2000)]
    per_order: usize,
    /// Sequential GETs timed at each step.
    #[arg(long, default_value_t = 200)]
    gets: usize,
    /// Orders created at each step, whose events every all-orders client must receive.
    #[arg(long, default_value_t = 10)]
    events: usize,
}

const WAIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = OrderServiceProcess::start().await?;
    let log = tempfile::NamedTempFile::new()?;
    let serve = ServeProcess::start_logging_to(
        StatusClientCli::new(server.url(), None)
            .timeout("10s")
            .env("RUST_LOG", "warn"),
        log.reopen()?,
    )
    .await?;
    let addr = serve.addr();
    let auth = format!("Bearer {WRITER_TOKEN}");
    let probe = create(addr, &auth, "probe").await?;

    println!(
        "| all-orders SSE clients | GET p50 | GET p99 | p50 vs none | events delivered | last delivery after |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut baseline = None;
    for &clients in &args.all_orders {
        let received = Arc::new(AtomicUsize::new(0));
        let streams = open_all(addr, &auth, "/v1/events", clients).await?;
        let readers: Vec<_> = streams
            .into_iter()
            .map(|stream| tokio::spawn(read_events(stream, args.events, received.clone())))
            .collect();
        let (p50, p99) = time_gets(addr, &auth, &probe, args.gets).await?;
        let ratio = p50.as_secs_f64() / baseline.get_or_insert(p50).as_secs_f64();
        let started = Instant::now();
        for i in 0..args.events {
            create(addr, &auth, &format!("scale-{clients}-{i}")).await?;
        }
        for reader in readers {
            reader.await??;
        }
        let delivered = received.load(Ordering::Relaxed);
        println!(
            "| {clients} | {p50:.2?} | {p99:.2?} | {ratio:.2} | {delivered} of {} | {:.2?} |",
            clients * args.events,
            started.elapsed()
        );
    }

    if args.per_order > 0 {
        let orders: Vec<String> = futures::stream::iter(0..args.per_order)
            .map(|i| {
                let auth = auth.clone();
                async move { create(addr, &auth, &format!("one-{i}")).await }
            })
            .buffered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let received = Arc::new(AtomicUsize::new(0));
        let streams: Vec<SseStream> = futures::stream::iter(orders.iter())
            .map(|id| open(addr, &auth, format!("/v1/orders/{id}/events")))
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        // Each gets its order's current state, then the change below.
        let readers: Vec<_> = streams
            .into_iter()
            .map(|stream| tokio::spawn(read_events(stream, 2, received.clone())))
            .collect();
        let (p50, p99) = time_gets(addr, &auth, &probe, args.gets).await?;
        let ratio = p50.as_secs_f64() / baseline.unwrap_or(p50).as_secs_f64();
        let started = Instant::now();
        futures::stream::iter(orders.iter())
            .map(|id| {
                let auth = auth.clone();
                async move {
                    let response = http_request(
                        addr,
                        "POST",
                        &format!("/v1/orders/{id}/status"),
                        &[("authorization", &auth)],
                        Some(r#"{"status":"ORDER_STATUS_PAID"}"#),
                    )
                    .await?;
                    if response.status != 200 {
                        bail!("update: {} {}", response.status, response.body);
                    }
                    Ok(())
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<anyhow::Result<()>>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<()>>()?;
        for reader in readers {
            reader.await??;
        }
        println!(
            "\n| one-order SSE clients (distinct orders) | GET p50 | GET p99 | p50 vs none | events delivered | last delivery after |\n| --- | --- | --- | --- | --- | --- |\n| {} | {p50:.2?} | {p99:.2?} | {ratio:.2} | {} of {} | {:.2?} (updating all {} orders) |",
            args.per_order,
            received.load(Ordering::Relaxed),
            2 * args.per_order,
            started.elapsed(),
            args.per_order,
        );
    }
    Ok(())
}

async fn create(addr: SocketAddr, auth: &str, customer: &str) -> anyhow::Result<String> {
    let body = format!(
        r#"{{"customerId":"{customer}","currency":"EUR","items":[{{"sku":"BOOK","quantity":1,"unitPriceCents":"100"}}]}}"#
    );
    let response = http_request(
        addr,
        "POST",
        "/v1/orders",
        &[("authorization", auth)],
        Some(&body),
    )
    .await?;
    if response.status != 201 {
        bail!("create: {} {}", response.status, response.body);
    }
    Ok(response.json()?["orderId"]
        .as_str()
        .context("no orderId")?
        .to_owned())
}

async fn open(addr: SocketAddr, auth: &str, path: String) -> anyhow::Result<SseStream> {
    let stream = SseStream::open(addr, &path, &[("authorization", auth)]).await?;
    if stream.status != 200 {
        bail!("{path}: status {}", stream.status);
    }
    Ok(stream)
}

async fn open_all(
    addr: SocketAddr,
    auth: &str,
    path: &str,
    count: usize,
) -> anyhow::Result<Vec<SseStream>> {
    futures::stream::iter(0..count)
        .map(|_| open(addr, auth, path.to_owned()))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Reads `expected` events, counting them into `received`.
async fn read_events(
    mut stream: SseStream,
    expected: usize,
    received: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    for _ in 0..expected {
        match stream.next_event(WAIT).await? {
            Some(event) if event.event == "order" => {
                received.fetch_add(1, Ordering::Relaxed);
            }
            other => bail!("stream ended or failed: {other:?}"),
        }
    }
    Ok(())
}

/// p50 and p99 of `count` sequential GETs of `order`.
async fn time_gets(
    addr: SocketAddr,
    auth: &str,
    order: &str,
    count: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let response = http_request(
            addr,
            "GET",
            &format!("/v1/orders/{order}"),
            &[("authorization", auth)],
            None,
        )
        .await?;
        times.push(started.elapsed());
        if response.status != 200 {
            bail!("GET: {} {}", response.status, response.body);
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Ok((at(0.5), at(0.99)))
}
