//! The load generator: a fixed number of HTTP/2 connections, each carrying a fixed number of
//! concurrent streams that issue one unary call after another (closed loop). Only calls that
//! ended with grpc-status 0 and the expected response are counted; everything else is tallied
//! as an error by status code. Latency is measured per call from send to the decoded response.

use crate::canned;
use crate::cpu::CpuClock;
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Client settings, identical for every target.
#[derive(Debug, Clone, Copy)]
pub struct LoadSettings {
    /// HTTP/2 connections (one tonic `Channel` each).
    pub connections: usize,
    /// Calls in flight on each connection.
    pub streams_per_connection: usize,
    /// Load applied before measuring, so connections, caches and thread pools are warm.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// The deadline sent with every call (`grpc-timeout`), as real clients do.
    pub call_deadline: Duration,
}

/// Where the load goes and the credentials it carries.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://IP:PORT`, or `https://IP:PORT` for TLS.
    pub url: String,
    /// For `https://`: the CA certificate (PEM) that vouches for the server.
    pub ca_certificate_pem: Option<Vec<u8>>,
    /// `Bearer <token>`, sent on every call to every target (the bare server ignores it) so
    /// the requests on the wire are the same.
    pub authorization: MetadataValue<Ascii>,
    /// The server's process, whose CPU time is reported.
    pub server_pid: u32,
}

/// What each call does.
#[derive(Debug, Clone)]
pub enum Workload {
    /// Read one of these orders (in turn) and check it is the one asked for.
    GetOrder {
        /// Existing order ids.
        order_ids: Arc<[String]>,
    },
    /// Create the benchmark order with a fresh idempotency key `<key_prefix>-<stream>-<n>`.
    CreateOrder {
        /// Makes keys unique across rounds and targets.
        key_prefix: String,
    },
}

/// Calls that failed with one status code (or returned the wrong thing).
#[derive(Debug, Clone, Default)]
pub struct ErrorTally {
    /// How many.
    pub count: u64,
    /// One of their messages, to say what went wrong.
    pub example: String,
}

/// What one measured window produced.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Calls that completed in the window with grpc-status 0 and the expected response.
    pub ok: u64,
    /// Calls that completed in the window otherwise, by status code name.
    pub errors: BTreeMap<String, ErrorTally>,
    /// Latency of every OK call, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Length of the measured window.
    pub window: Duration,
    /// CPU time the server process used in the window, when it could be read.
    pub server_cpu: Option<Duration>,
    /// CPU time this (client) process used in the window, when it could be read.
    pub client_cpu: Option<Duration>,
    /// CPU time the database server used in the window, when the caller asked for it and it
    /// could be read (PostgreSQL; SQLite runs inside the service).
    pub database_cpu: Option<Duration>,
    /// WAL flushes the database server made in the window, when the caller asked for them
    /// and they could be read: with the calls, how many commits shared a flush.
    pub wal_flushes: Option<u64>,
}

impl LoadResult {
    /// Calls that failed in the window.
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|tally| tally.count).sum()
    }

    /// Adds another window's counts, latencies and CPU time to this one (CPU time stays known
    /// only while every window's is).
    pub fn merge(&mut self, other: &LoadResult) {
        if self.window.is_zero() {
            // Nothing merged yet: CPU figures start from the first window's.
            self.server_cpu = other.server_cpu;
            self.client_cpu = other.client_cpu;
            self.database_cpu = other.database_cpu;
            self.wal_flushes = other.wal_flushes;
        } else {
            self.server_cpu = add(self.server_cpu, other.server_cpu);
            self.client_cpu = add(self.client_cpu, other.client_cpu);
            self.database_cpu = add(self.database_cpu, other.database_cpu);
            self.wal_flushes = self.wal_flushes.zip(other.wal_flushes).map(|(a, b)| a + b);
        }
        self.add_calls(other);
        self.window += other.window;
    }
}

impl LoadResult {
    /// Adds the calls (counts, errors, latencies) of `other`, which ran at the same time.
    fn add_calls(&mut self, other: &LoadResult) {
        self.ok += other.ok;
        for (code, tally) in &other.errors {
            let mine = self.errors.entry(code.clone()).or_default();
            mine.count += tally.count;
            if mine.example.is_empty() {
                mine.example.clone_from(&tally.example);
            }
        }
        self.latencies_us.extend_from_slice(&other.latencies_us);
    }
}

fn add(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(a? + b?)
}

/// Opens the connections, runs `workload` for the warm-up and the measured window, and
/// returns what completed inside the window.
pub async fn run(
    target: &Target,
    workload: &Workload,
    settings: LoadSettings,
    cpu: Option<CpuClock>,
) -> anyhow::Result<LoadResult> {
    run_spread(std::slice::from_ref(target), workload, settings, cpu, None).await
}

/// Cumulative counters of a database server, read at both ends of the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DatabaseReading {
    /// CPU time its processes used so far, when it could be read.
    pub cpu: Option<Duration>,
    /// WAL flushes so far, when they could be read.
    pub wal_flushes: Option<u64>,
}

impl DatabaseReading {
    /// What was used between `earlier` and this reading (unknown where either is).
    pub fn since(self, earlier: DatabaseReading) -> DatabaseReading {
        DatabaseReading {
            cpu: self.cpu.zip(earlier.cpu).map(|(a, b)| a.saturating_sub(b)),
            wal_flushes: self
                .wal_flushes
                .zip(earlier.wal_flushes)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// Reads a database server's counters (its CPU time, its WAL flushes).
pub trait DatabaseProbe {
    /// The counters now.
    fn read(&self) -> Pin<Box<dyn Future<Output = DatabaseReading> + '_>>;
}

/// Like [`run`], with the connections spread over `targets` in turn (connection `i` goes to
/// `targets[i % targets.len()]`): several replicas of one service loaded as one. The server CPU
/// is the sum over the targets' processes; `database`, when given, is read at both ends of the
/// window into [`LoadResult::database_cpu`] and [`LoadResult::wal_flushes`].
pub async fn run_spread(
    targets: &[Target],
    workload: &Workload,
    settings: LoadSettings,
    cpu: Option<CpuClock>,
    database: Option<&dyn DatabaseProbe>,
) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(!targets.is_empty(), "no target to load");
    let mut channels = Vec::with_capacity(settings.connections);
    for connection in 0..settings.connections {
        let target = &targets[connection % targets.len()];
        channels.push((target, connect(target).await?));
    }
    let start = Instant::now() + settings.warmup;
    let end = start + settings.measure;
    let mut workers = JoinSet::new();
    for (connection, (target, channel)) in channels.iter().enumerate() {
        for stream in 0..settings.streams_per_connection {
            let call = Caller {
                client: OrderServiceClient::new(channel.clone()),
                authorization: target.authorization.clone(),
                deadline: settings.call_deadline,
            };
            let worker = connection * settings.streams_per_connection + stream;
            let workload = workload.clone();
            workers.spawn(async move { call.keep_calling(&workload, worker, start, end).await });
        }
    }
    let mut server_pids: Vec<u32> = targets.iter().map(|target| target.server_pid).collect();
    server_pids.sort_unstable();
    server_pids.dedup();
    let server = |clock: CpuClock| {
        server_pids
            .iter()
            .map(|&pid| clock.process_time(pid).ok())
            .sum::<Option<Duration>>()
    };
    let client = |clock: CpuClock| clock.process_time(std::process::id()).ok();
    let database = || async {
        match database {
            Some(probe) => probe.read().await,
            None => DatabaseReading::default(),
        }
    };
    tokio::time::sleep_until(start.into()).await;
    let database_before = database().await;
    let before = cpu.map(|clock| (server(clock), client(clock)));
    tokio::time::sleep_until(end.into()).await;
    let after = cpu.map(|clock| (server(clock), client(clock)));
    let database_used = database().await.since(database_before);
    let mut result = LoadResult::default();
    while let Some(joined) = workers.join_next().await {
        result.add_calls(&joined?);
    }
    result.window = settings.measure;
    if let (Some((server_before, client_before)), Some((server_after, client_after))) =
        (before, after)
    {
        result.server_cpu = server_after.zip(server_before).map(|(a, b)| a - b);
        result.client_cpu = client_after.zip(client_before).map(|(a, b)| a - b);
    }
    result.database_cpu = database_used.cpu;
    result.wal_flushes = database_used.wal_flushes;
    Ok(result)
}

/// Creates `count` benchmark orders on `target` (32 at a time) and returns their ids.
pub async fn seed_orders(
    target: &Target,
    count: usize,
    key_prefix: &str,
    deadline: Duration,
) -> anyhow::Result<Vec<String>> {
    const PARALLEL: usize = 32;
    let channel = connect(target).await?;
    let mut tasks = JoinSet::new();
    for task in 0..PARALLEL {
        let mut call = Caller {
            client: OrderServiceClient::new(channel.clone()),
            authorization: target.authorization.clone(),
            deadline,
        };
        let key_prefix = key_prefix.to_owned();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for n in (task..count).step_by(PARALLEL) {
                let order = call
                    .create(format!("{key_prefix}-{n}"))
                    .await
                    .map_err(|failure| anyhow::anyhow!("seeding order {n}: {}", failure.1))?;
                ids.push(order.order_id);
            }
            anyhow::Ok(ids)
        });
    }
    let mut ids = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        ids.extend(joined??);
    }
    Ok(ids)
}

/// Opens one HTTP/2 connection to `target` (TCP_NODELAY, TLS when it has a CA certificate).
pub async fn connect(target: &Target) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(target.url.clone())?.tcp_nodelay(true);
    if let Some(pem) = &target.ca_certificate_pem {
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
    Ok(endpoint.connect().await?)
}

/// A failed call: the status code name and a message.
pub type Failure = (String, String);

/// Makes calls on one connection with the target's credentials and a deadline on each.
pub struct Caller {
    client: OrderServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
    deadline: Duration,
}

impl Caller {
    /// A caller on `channel` sending `authorization` and `deadline` with every call.
    pub fn new(
        channel: Channel,
        authorization: MetadataValue<Ascii>,
        deadline: Duration,
    ) -> Caller {
        Caller {
            client: OrderServiceClient::new(channel),
            authorization,
            deadline,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    async fn keep_calling(
        mut self,
        workload: &Workload,
        worker: usize,
        start: Instant,
        end: Instant,
    ) -> LoadResult {
        let mut result = LoadResult::default();
        for n in 0usize.. {
            let sent = Instant::now();
            if sent >= end {
                break;
            }
            let outcome = match workload {
                Workload::GetOrder { order_ids } => {
                    let id = &order_ids[(worker * 7919 + n) % order_ids.len()];
                    self.get(id).await
                }
                Workload::CreateOrder { key_prefix } => self
                    .create(format!("{key_prefix}-{worker}-{n}"))
                    .await
                    .map(drop),
            };
            let done = Instant::now();
            if done < start || done >= end {
                continue;
            }
            match outcome {
                Ok(()) => {
                    result.ok += 1;
                    let micros = (done - sent).as_micros();
                    result
                        .latencies_us
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
                Err((code, message)) => {
                    let tally = result.errors.entry(code).or_default();
                    tally.count += 1;
                    if tally.example.is_empty() {
                        tally.example = message;
                    }
                }
            }
        }
        result
    }

    async fn get(&mut self, order_id: &str) -> Result<(), Failure> {
        let request = self.request(pb::GetOrderRequest {
            order_id: order_id.to_owned(),
        });
        let order = self
            .client
            .get_order(request)
            .await
            .map_err(status_failure)?
            .into_inner();
        if order.order_id != order_id
            || order.total_cents != canned::expected_total_cents()
            || order.items.len() != canned::line_items().len()
        {
            return Err(wrong(format!("asked for {order_id}, got {order:?}")));
        }
        Ok(())
    }

    /// Creates the benchmark order with idempotency key `request_id` and checks that the
    /// answer is a new order of its shape.
    pub async fn create(&mut self, request_id: String) -> Result<pb::Order, Failure> {
        let request = self.request(canned::create_request(request_id));
        let order = self
            .client
            .create_order(request)
            .await
            .map_err(status_failure)?
            .into_inner();
        if order.order_id.is_empty()
            || order.status != pb::OrderStatus::Pending as i32
            || order.version != 1
            || order.total_cents != canned::expected_total_cents()
        {
            return Err(wrong(format!("not a new order: {order:?}")));
        }
        Ok(order)
    }
}

fn status_failure(status: tonic::Status) -> Failure {
    (format!("{:?}", status.code()), status.message().to_owned())
}

fn wrong(message: String) -> Failure {
    ("WrongResponse".to_owned(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(ok: u64, cpu_micros: Option<u64>) -> LoadResult {
        let mut result = LoadResult {
            ok,
            latencies_us: vec![100; ok as usize],
            window: Duration::from_secs(1),
            server_cpu: cpu_micros.map(Duration::from_micros),
            client_cpu: cpu_micros.map(Duration::from_micros),
            database_cpu: cpu_micros.map(Duration::from_micros),
            wal_flushes: cpu_micros,
            ..LoadResult::default()
        };
        result.errors.insert(
            "Unavailable".into(),
            ErrorTally {
                count: 1,
                example: "down".into(),
            },
        );
        result
    }

    #[test]
    fn merging_windows_adds_calls_errors_time_and_cpu() {
        let mut total = LoadResult::default();
        total.merge(&window(3, Some(30)));
        total.merge(&window(2, Some(20)));
        assert_eq!(total.ok, 5);
        assert_eq!(total.latencies_us.len(), 5);
        assert_eq!(total.error_count(), 2);
        assert_eq!(total.errors["Unavailable"].example, "down");
        assert_eq!(total.window, Duration::from_secs(2));
        assert_eq!(total.server_cpu, Some(Duration::from_micros(50)));
        assert_eq!(total.database_cpu, Some(Duration::from_micros(50)));
        assert_eq!(total.wal_flushes, Some(50));
    }

    #[test]
    fn cpu_is_unknown_once_any_window_lacks_it() {
        let mut total = LoadResult::default();
        total.merge(&window(3, Some(30)));
        total.merge(&window(2, None));
        assert_eq!(total.server_cpu, None);
        assert_eq!(total.wal_flushes, None);
    }

    #[test]
    fn database_use_is_the_difference_of_two_readings() {
        let before = DatabaseReading {
            cpu: Some(Duration::from_millis(10)),
            wal_flushes: Some(7),
        };
        let after = DatabaseReading {
            cpu: Some(Duration::from_millis(25)),
            wal_flushes: None,
        };
        assert_eq!(
            after.since(before),
            DatabaseReading {
                cpu: Some(Duration::from_millis(15)),
                wal_flushes: None,
            }
        );
    }
}
