//! Opens a number of WatchOrders streams on a running order-service and holds them open: for
//! measuring what an open stream costs the server in memory (run `--between`, e.g. a command
//! reading the server's RSS, once every stream has its response headers), and what the fan-out
//! costs (`--creates N --rate R`: N CreateOrder calls paced at R per second while the streams are
//! open, then the CreateOrder latency, the latency from sending a create to each stream receiving
//! its event, the deliveries counted, and with `--server-pid` the server's CPU per delivery).
//!
//! The streams read only each event's sequence and `event_time` from its bytes ([`slim`]), not
//! the whole message: with 10,000 streams a client that decodes everything cannot keep up on
//! one core, and a client that falls behind measures itself (and makes the server batch).

use anyhow::Context as _;
use clap::Parser;
use order_status_bench::cpu::CpuClock;
use order_status_bench::report::{millis, percentile};
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(
    about = "Holds WatchOrders streams open (memory per stream; fan-out cost with --creates)"
)]
struct Args {
    /// `http://IP:PORT` of the order-service.
    #[arg(long)]
    url: String,
    /// The bearer token.
    #[arg(long, env = "BENCH_TOKEN")]
    token: String,
    /// Streams to open.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Streams per HTTP/2 connection (the server allows 1,024).
    #[arg(long, default_value_t = 1_000)]
    per_connection: usize,
    /// Shell command run while every stream is open.
    #[arg(long)]
    between: Option<String>,
    /// CreateOrder calls made while the streams are open (on a connection of their own).
    #[arg(long, default_value_t = 0)]
    creates: usize,
    /// CreateOrder calls started per second (each without waiting for the previous).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// The order-service's process id: report its CPU time over the creates, per delivery.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Shell command run after the creates' deliveries arrived, while the streams are still
    /// open (e.g. `callgrind_control --dump PID`, with `--between "callgrind_control --zero
    /// PID"`, to count the server's instructions for the deliveries alone).
    #[arg(long)]
    after: Option<String>,
    /// How long to wait for the last deliveries after the last create answered.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let authorization: MetadataValue<Ascii> = format!("Bearer {}", args.token).parse()?;
    let mut open = Vec::with_capacity(args.streams);
    let mut client = None;
    for stream in 0..args.streams {
        if stream % args.per_connection.max(1) == 0 {
            client = Some(tonic::client::Grpc::new(connect(&args.url).await?));
        }
        let Some(client) = client.as_mut() else {
            unreachable!("a client is made for the first stream");
        };
        open.push(slim::watch(client, &authorization).await?);
    }
    println!("{} streams open", open.len());
    if let Some(command) = &args.between {
        let status = Command::new("sh").arg("-c").arg(command).status()?;
        anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    }
    if args.creates > 0 {
        fan_out(&args, open, authorization).await?;
    }
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Makes the creates while every stream reads, and reports.
async fn fan_out(
    args: &Args,
    open: Vec<tonic::Streaming<slim::Event>>,
    authorization: MetadataValue<Ascii>,
) -> anyhow::Result<()> {
    let delivery_micros = Arc::new(Mutex::new(Vec::with_capacity(open.len() * args.creates)));
    let streams = open.len();
    let readers: Vec<_> = open
        .into_iter()
        .map(|stream| {
            tokio::spawn(read_events(
                stream,
                Arc::clone(&delivery_micros),
                args.creates,
            ))
        })
        .collect();

    let clock = CpuClock::new()?;
    let cpu_before = args
        .server_pid
        .map(|pid| clock.process_time(pid))
        .transpose()?;
    let writes_before = args.server_pid.map(write_syscalls).transpose()?;
    let started = Instant::now();
    let writer = OrderServiceClient::new(connect(&args.url).await?);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = Vec::with_capacity(args.creates);
    for number in 0..args.creates {
        ticks.tick().await;
        let mut writer = writer.clone();
        let authorization = authorization.clone();
        calls.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(pb::CreateOrderRequest {
                request_id: format!("watch-hold-{}-{number}", std::process::id()),
                customer_id: "watch-hold".into(),
                items: order_status_bench::canned::line_items(),
                currency: "EUR".into(),
            });
            request
                .metadata_mut()
                .insert("authorization", authorization);
            let at = Instant::now();
            writer.create_order(request).await.map(|_| at.elapsed())
        }));
    }
    let mut create_micros = Vec::with_capacity(args.creates);
    for call in calls {
        let took = call.await?.context("a CreateOrder call failed")?;
        create_micros.push(took.as_micros() as u32);
    }
    let expected = streams * args.creates;
    let drain_until = Instant::now() + args.drain;
    while delivery_micros.lock().expect("not poisoned").len() < expected
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(clock.process_time(pid)? - before),
        _ => None,
    };
    let writes = match (args.server_pid, writes_before) {
        (Some(pid), Some(before)) => Some(write_syscalls(pid)? - before),
        _ => None,
    };
    if let Some(command) = &args.after {
        let status = Command::new("sh").arg("-c").arg(command).status()?;
        anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    }
    for reader in &readers {
        reader.abort();
    }
    let mut deliveries = std::mem::take(&mut *delivery_micros.lock().expect("not poisoned"));
    create_micros.sort_unstable();
    deliveries.sort_unstable();
    println!(
        "{} creates at {}/s with {streams} streams open, over {:.2}s",
        args.creates,
        args.rate,
        elapsed.as_secs_f64()
    );
    println!(
        "CreateOrder latency: p50 {}  p99 {}  max {}",
        millis(percentile(&create_micros, 0.5)),
        millis(percentile(&create_micros, 0.99)),
        millis(percentile(&create_micros, 1.0)),
    );
    println!(
        "deliveries: {} of {expected}; latency from the event's time to its receipt: p50 {}  p99 {}  max {}",
        deliveries.len(),
        millis(percentile(&deliveries, 0.5)),
        millis(percentile(&deliveries, 0.99)),
        millis(percentile(&deliveries, 1.0)),
    );
    if let Some(cpu) = cpu {
        println!(
            "server CPU: {:.3}s over the run = {:.2} µs per delivery (creates included), {:.1} µs per create",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / deliveries.len().max(1) as f64,
            cpu.as_secs_f64() * 1e6 / args.creates as f64,
        );
    }
    if let Some(writes) = writes {
        println!(
            "server write syscalls: {writes} = {:.3} per delivery",
            writes as f64 / deliveries.len().max(1) as f64
        );
    }
    anyhow::ensure!(
        deliveries.len() == expected,
        "{} deliveries missing",
        expected - deliveries.len()
    );
    Ok(())
}

/// The number of write-like system calls process `pid` made so far (`syscw` of
/// `/proc/PID/io`): how many socket writes the deliveries took.
fn write_syscalls(pid: u32) -> anyhow::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("reading /proc/{pid}/io"))?;
    io.lines()
        .find_map(|line| line.strip_prefix("syscw:"))
        .and_then(|count| count.trim().parse().ok())
        .with_context(|| format!("no syscw in /proc/{pid}/io"))
}

/// Reads one stream, recording for each event how long after its `event_time` it arrived (the
/// server stamps it when the write arrives; one machine, one clock).
async fn read_events(
    mut stream: tonic::Streaming<slim::Event>,
    delivery_micros: Arc<Mutex<Vec<u32>>>,
    creates: usize,
) {
    let mut mine = Vec::with_capacity(creates);
    while let Ok(Some(event)) = stream.message().await {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as i64);
        mine.push(now.saturating_sub(event.time_micros).max(0) as u32);
        if mine.len() == creates {
            break;
        }
    }
    delivery_micros.lock().expect("not poisoned").extend(mine);
}

/// `WatchOrders` with a decoder that reads two fields of `OrderEvent` and skips the rest.
mod slim {
    use bytes::Buf;
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::transport::Channel;

    /// What the benchmark reads of an `OrderEvent`.
    #[derive(Debug, Default)]
    pub(crate) struct Event {
        /// Field 1.
        #[allow(dead_code)]
        pub(crate) sequence: u64,
        /// Field 4 (`event_time`) in microseconds since the epoch.
        pub(crate) time_micros: i64,
    }

    /// Opens a live watch of every order (the request is empty: every field at its default).
    pub(crate) async fn watch(
        client: &mut tonic::client::Grpc<Channel>,
        authorization: &MetadataValue<Ascii>,
    ) -> anyhow::Result<tonic::Streaming<Event>> {
        client.ready().await?;
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", authorization.clone());
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/orders.v1.OrderService/WatchOrders",
        );
        Ok(client
            .server_streaming(request, path, SlimCodec)
            .await?
            .into_inner())
    }

    struct SlimCodec;

    impl Codec for SlimCodec {
        type Encode = ();
        type Decode = Event;
        type Encoder = SlimCodec;
        type Decoder = SlimCodec;

        fn encoder(&mut self) -> SlimCodec {
            SlimCodec
        }

        fn decoder(&mut self) -> SlimCodec {
            SlimCodec
        }
    }

    impl Encoder for SlimCodec {
        type Item = ();
        type Error = Status;

        /// The default `WatchOrdersRequest` encodes to no bytes.
        fn encode(&mut self, (): (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
            Ok(())
        }
    }

    impl Decoder for SlimCodec {
        type Item = Event;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Event>, Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            let mut event = Event::default();
            let mut fields = Fields(&bytes);
            while let Some((field, value)) = fields.next()? {
                match (field, value) {
                    (1, Value::Varint(sequence)) => event.sequence = sequence,
                    (4, Value::Bytes(time)) => {
                        let (mut seconds, mut nanos) = (0, 0);
                        let mut time = Fields(time);
                        while let Some((field, value)) = time.next()? {
                            match (field, value) {
                                (1, Value::Varint(value)) => seconds = value as i64,
                                (2, Value::Varint(value)) => nanos = value as i64,
                                _ => {}
                            }
                        }
                        event.time_micros = seconds * 1_000_000 + nanos / 1_000;
                    }
                    _ => {}
                }
            }
            Ok(Some(event))
        }
    }

    enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
    }

    /// The fields of one protobuf message (varints and length-delimited only, which is all
    /// `OrderEvent` and `Timestamp` use).
    struct Fields<'a>(&'a [u8]);

    impl<'a> Fields<'a> {
        fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, Status> {
            if self.0.is_empty() {
                return Ok(None);
            }
            let key = self.varint()?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                2 => {
                    let len = self.varint()? as usize;
                    if len > self.0.len() {
                        return Err(Status::internal("a field runs past the message"));
                    }
                    let (value, rest) = self.0.split_at(len);
                    self.0 = rest;
                    Value::Bytes(value)
                }
                other => return Err(Status::internal(format!("unexpected wire type {other}"))),
            };
            Ok(Some((key >> 3, value)))
        }

        fn varint(&mut self) -> Result<u64, Status> {
            let mut value = 0u64;
            for (index, byte) in self.0.iter().enumerate().take(10) {
                value |= u64::from(byte & 0x7f) << (7 * index);
                if byte & 0x80 == 0 {
                    self.0 = &self.0[index + 1..];
                    return Ok(value);
                }
            }
            Err(Status::internal("a malformed varint"))
        }
    }
}
