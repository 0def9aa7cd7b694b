//! Makes an exact number of GetOrder calls against a running order-service, for counting the
//! server's instructions per call (`valgrind --tool=callgrind`, where a timed load generator
//! would make a different number of calls every run). Creates one order, makes `--warmup`
//! calls, then `--calls` more; between the two it runs `--between` (e.g. `callgrind_control
//! -z PID`), and after them `--after` (e.g. `callgrind_control -d PID`).

use clap::Parser;
use order_status_bench::canned;
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use std::process::Command;
use std::time::Instant;
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(about = "Makes an exact number of GetOrder calls (for instruction counts)")]
struct Args {
    /// `http://IP:PORT` of the order-service.
    #[arg(long)]
    url: String,
    /// The bearer token.
    #[arg(long, env = "BENCH_TOKEN")]
    token: String,
    /// Calls made before `--between` runs.
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Calls counted.
    #[arg(long, default_value_t = 20_000)]
    calls: u64,
    /// Calls in flight (all on one connection).
    #[arg(long, default_value_t = 16)]
    in_flight: u64,
    /// Shell command run after the warm-up.
    #[arg(long)]
    between: Option<String>,
    /// Shell command run after the counted calls.
    #[arg(long)]
    after: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Endpoint::from_shared(args.url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let authorization: MetadataValue<Ascii> = format!("Bearer {}", args.token).parse()?;
    let mut client = OrderServiceClient::new(channel.clone());
    let mut create = tonic::Request::new(canned::create_request(format!(
        "call-count-{}",
        std::process::id()
    )));
    create
        .metadata_mut()
        .insert("authorization", authorization.clone());
    let order_id = client.create_order(create).await?.into_inner().order_id;

    calls(
        &channel,
        &authorization,
        &order_id,
        args.warmup,
        args.in_flight,
    )
    .await?;
    run(args.between.as_deref())?;
    let started = Instant::now();
    calls(
        &channel,
        &authorization,
        &order_id,
        args.calls,
        args.in_flight,
    )
    .await?;
    let elapsed = started.elapsed();
    run(args.after.as_deref())?;
    println!(
        "{} GetOrder calls in {:.2?} ({:.0}/s)",
        args.calls,
        elapsed,
        args.calls as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Makes `count` GetOrder calls for `order_id`, `in_flight` at a time; any failure is an error.
async fn calls(
    channel: &Channel,
    authorization: &MetadataValue<Ascii>,
    order_id: &str,
    count: u64,
    in_flight: u64,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for task in 0..in_flight {
        let mut client = OrderServiceClient::new(channel.clone());
        let authorization = authorization.clone();
        let order_id = order_id.to_owned();
        let share = count / in_flight + u64::from(task < count % in_flight);
        tasks.spawn(async move {
            for _ in 0..share {
                let mut request = tonic::Request::new(pb::GetOrderRequest {
                    order_id: order_id.clone(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
                let order = client.get_order(request).await?.into_inner();
                anyhow::ensure!(
                    order.order_id == order_id,
                    "GetOrder returned another order"
                );
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

fn run(command: Option<&str>) -> anyhow::Result<()> {
    if let Some(command) = command {
        let status = Command::new("sh").arg("-c").arg(command).status()?;
        anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    }
    Ok(())
}
