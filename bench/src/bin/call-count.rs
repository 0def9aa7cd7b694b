//! Makes an exact number of calls of one kind against a running order-service, for counting the
//! server's instructions per call (`valgrind --tool=callgrind`, where a timed load generator
//! would make a different number of calls every run). `--call get-order` creates one order and
//! reads it; `--call create-order` creates orders, each with a request id of its own. Makes
//! `--warmup` calls, then `--calls` more; between the two it runs `--between` (e.g.
//! `callgrind_control -z PID`), and after them `--after` (e.g. `callgrind_control -d PID`).

use clap::{Parser, ValueEnum};
use order_status_bench::canned;
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(
    about = "Makes an exact number of GetOrder or CreateOrder calls (for instruction counts)"
)]
struct Args {
    /// `http://IP:PORT` of the order-service.
    #[arg(long)]
    url: String,
    /// The bearer token.
    #[arg(long, env = "BENCH_TOKEN")]
    token: String,
    /// Which call to make.
    #[arg(long, value_enum, default_value_t = Call::GetOrder)]
    call: Call,
    /// Calls made before `--between` runs.
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Calls counted.
    #[arg(long, default_value_t = 20_000)]
    calls: u64,
    /// Calls in flight (all on one connection). For CreateOrder this also sets how many
    /// creates the service can commit together (group commit).
    #[arg(long, default_value_t = 16)]
    in_flight: u64,
    /// Shell command run after the warm-up.
    #[arg(long)]
    between: Option<String>,
    /// Shell command run after the counted calls.
    #[arg(long)]
    after: Option<String>,
}

/// The call counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Call {
    /// GetOrder of one order created at the start.
    GetOrder,
    /// CreateOrder of the benchmark order, a new request id every call.
    CreateOrder,
}

/// What every call needs: the connection, the token, and what to call with.
#[derive(Clone)]
struct Caller {
    channel: Channel,
    authorization: MetadataValue<Ascii>,
    call: Call,
    /// The order GetOrder reads.
    order_id: Arc<str>,
    /// Unique among this process's creates; with the pid, among every run's request ids.
    next_request: Arc<AtomicU64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Endpoint::from_shared(args.url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let authorization: MetadataValue<Ascii> = format!("Bearer {}", args.token).parse()?;
    let mut caller = Caller {
        channel,
        authorization,
        call: args.call,
        order_id: Arc::from(""),
        next_request: Arc::new(AtomicU64::new(0)),
    };
    let first = caller.create().await?;
    caller.order_id = Arc::from(first.order_id);

    caller.calls(args.warmup, args.in_flight).await?;
    run(args.between.as_deref())?;
    let started = Instant::now();
    caller.calls(args.calls, args.in_flight).await?;
    let elapsed = started.elapsed();
    run(args.after.as_deref())?;
    println!(
        "{} {} calls in {:.2?} ({:.0}/s)",
        args.calls,
        match args.call {
            Call::GetOrder => "GetOrder",
            Call::CreateOrder => "CreateOrder",
        },
        elapsed,
        args.calls as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

impl Caller {
    /// Makes `count` calls, `in_flight` at a time; any failure is an error.
    async fn calls(&self, count: u64, in_flight: u64) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        for task in 0..in_flight {
            let caller = self.clone();
            let share = count / in_flight + u64::from(task < count % in_flight);
            tasks.spawn(async move {
                for _ in 0..share {
                    match caller.call {
                        Call::GetOrder => caller.get().await?,
                        Call::CreateOrder => drop(caller.create().await?),
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        Ok(())
    }

    /// Reads the order created at the start and checks it is the one asked for.
    async fn get(&self) -> anyhow::Result<()> {
        let mut request = tonic::Request::new(pb::GetOrderRequest {
            order_id: self.order_id.to_string(),
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let order = OrderServiceClient::new(self.channel.clone())
            .get_order(request)
            .await?
            .into_inner();
        anyhow::ensure!(
            *order.order_id == *self.order_id,
            "GetOrder returned another order"
        );
        Ok(())
    }

    /// Creates the benchmark order under a request id never used before, and checks that a
    /// new order (version 1, the expected total) came back.
    async fn create(&self) -> anyhow::Result<pb::Order> {
        let number = self.next_request.fetch_add(1, Ordering::Relaxed);
        let mut request = tonic::Request::new(canned::create_request(format!(
            "call-count-{}-{number}",
            std::process::id()
        )));
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let order = OrderServiceClient::new(self.channel.clone())
            .create_order(request)
            .await?
            .into_inner();
        anyhow::ensure!(
            order.version == 1 && order.total_cents == canned::expected_total_cents(),
            "CreateOrder returned an order that is not a new benchmark order: {order:?}"
        );
        Ok(order)
    }
}

fn run(command: Option<&str>) -> anyhow::Result<()> {
    if let Some(command) = command {
        let status = Command::new("sh").arg("-c").arg(command).status()?;
        anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    }
    Ok(())
}
