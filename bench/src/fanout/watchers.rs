//! Opening many all-orders `WatchOrders` streams (live, `after_sequence` 0) over a few HTTP/2
//! connections, one task per stream, and recording every event each one receives: which
//! create made it, its sequence and its arrival time, checked as it arrives.

use super::check::StreamCheck;
use super::codec::{Delivered, WatchCodec};
use crate::load::Target;
use orders_proto::v1 as pb;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};

/// The method path of WatchOrders.
const WATCH_ORDERS: &str = "/orders.v1.OrderService/WatchOrders";
/// Streams being opened at once: more would be refused by the service's limit of calls in
/// progress (a watch holds its slot until its response headers are sent).
const OPENING_AT_ONCE: usize = 128;
/// Receive windows of the watch connections, large enough that HTTP/2 flow control never
/// holds back the server while the client reads (the same for every server measured).
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;

/// One delivered event: which create made it, its sequence, and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The number of the create that made it.
    pub create: u32,
    /// The event's sequence.
    pub sequence: u64,
    /// Microseconds after the run's clock base.
    pub at_us: u32,
}

/// What one stream has received and how it ended.
#[derive(Debug, Default)]
pub struct WatcherLog {
    /// Order and exactly-once check of everything it received.
    pub check: StreamCheck,
    /// Events from the benchmark's creates not yet collected by [`Watchers::take_arrivals`].
    pub arrivals: Vec<Arrival>,
    /// How the stream ended before the benchmark closed it: the gRPC code's name.
    pub ended: Option<String>,
}

/// Open watch streams on one server.
pub struct Watchers {
    logs: Vec<Arc<Mutex<WatcherLog>>>,
    /// Events delivered over all streams so far.
    delivered: Arc<AtomicU64>,
    /// Streams that ended so far.
    ended: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

fn lock(log: &Mutex<WatcherLog>) -> MutexGuard<'_, WatcherLog> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Watchers {
    /// Opens `count` streams on `target`, `per_connection` on each connection, and returns
    /// once every one has its response headers; arrival times count from `clock_base`.
    pub async fn open(
        target: &Target,
        count: usize,
        per_connection: usize,
        clock_base: Instant,
    ) -> anyhow::Result<Watchers> {
        anyhow::ensure!(
            per_connection > 0,
            "--streams-per-connection must be positive"
        );
        let delivered = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicU64::new(0));
        let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
        let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let mut logs = Vec::with_capacity(count);
        let mut tasks = JoinSet::new();
        let mut channel = None;
        for stream in 0..count {
            if stream % per_connection == 0 {
                channel = Some(connect(target).await?);
            }
            let Some(channel) = channel.clone() else {
                unreachable!("a connection is made for the first stream");
            };
            let log = Arc::new(Mutex::new(WatcherLog::default()));
            logs.push(Arc::clone(&log));
            let stream = WatchStream {
                channel,
                authorization: target.authorization.clone(),
                log,
                delivered: Arc::clone(&delivered),
                ended: Arc::clone(&ended),
                clock_base,
            };
            let opening = Arc::clone(&opening);
            let opened_tx = opened_tx.clone();
            tasks.spawn(stream.run(opening, opened_tx));
        }
        drop(opened_tx);
        for _ in 0..count {
            match opened_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(error)) => anyhow::bail!("opening a watch stream: {error}"),
                None => anyhow::bail!("a watch task ended before saying whether it opened"),
            }
        }
        Ok(Watchers {
            logs,
            delivered,
            ended,
            tasks,
        })
    }

    /// Streams open (or ended early) on this server.
    pub fn count(&self) -> usize {
        self.logs.len()
    }

    /// Events delivered over all streams so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits until every stream still open has received `events` events in all (a stream
    /// that ended early counts with what it had), or `timeout` passes; says whether they did.
    pub async fn wait_for(&self, events: u64, timeout: Duration) -> bool {
        let give_up = Instant::now() + timeout;
        loop {
            let target = if self.ended.load(Ordering::Relaxed) == 0 {
                events * self.logs.len() as u64
            } else {
                self.logs
                    .iter()
                    .map(|log| {
                        let log = lock(log);
                        if log.ended.is_some() {
                            log.check.received()
                        } else {
                            events
                        }
                    })
                    .sum()
            };
            if self.delivered() >= target {
                return true;
            }
            if Instant::now() >= give_up {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Takes the arrivals recorded since the last call, from every stream.
    pub fn take_arrivals(&self) -> Vec<Arrival> {
        let mut all = Vec::new();
        for log in &self.logs {
            all.append(&mut lock(log).arrivals);
        }
        all
    }

    /// Calls `f` with every stream's log.
    pub fn for_each_log(&self, mut f: impl FnMut(&WatcherLog)) {
        for log in &self.logs {
            f(&lock(log));
        }
    }

    /// Streams that ended before the benchmark closed them, by gRPC code.
    pub fn ended_early(&self) -> BTreeMap<String, u64> {
        let mut codes = BTreeMap::new();
        self.for_each_log(|log| {
            if let Some(code) = &log.ended {
                *codes.entry(code.clone()).or_default() += 1;
            }
        });
        codes
    }

    /// Closes every stream.
    pub async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

/// One HTTP/2 connection for watch streams (TCP_NODELAY, large receive windows).
async fn connect(target: &Target) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(target.url.clone())?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .connect()
        .await?)
}

struct WatchStream {
    channel: Channel,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    log: Arc<Mutex<WatcherLog>>,
    delivered: Arc<AtomicU64>,
    ended: Arc<AtomicU64>,
    clock_base: Instant,
}

impl WatchStream {
    async fn run(self, opening: Arc<Semaphore>, opened: mpsc::UnboundedSender<Result<(), String>>) {
        let permit = opening.acquire_owned().await;
        let mut stream = match self.open().await {
            Ok(stream) => stream,
            Err(error) => {
                let _ = opened.send(Err(error));
                return;
            }
        };
        drop(permit);
        let _ = opened.send(Ok(()));
        let code = loop {
            match stream.message().await {
                Ok(Some(event)) => self.record(event),
                Ok(None) => break "Ok (ended without an error)".to_owned(),
                Err(status) => break format!("{:?}", status.code()),
            }
        };
        lock(&self.log).ended = Some(code);
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    async fn open(&self) -> Result<tonic::Streaming<Delivered>, String> {
        let mut grpc = Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|error| format!("connection not ready: {error}"))?;
        let mut request = tonic::Request::new(pb::WatchOrdersRequest::default());
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let response = grpc
            .server_streaming(
                request,
                http::uri::PathAndQuery::from_static(WATCH_ORDERS),
                WatchCodec,
            )
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        let watch_from = response
            .metadata()
            .get(orders_proto::WATCH_FROM_METADATA)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| {
                format!(
                    "the response has no readable {} metadata",
                    orders_proto::WATCH_FROM_METADATA
                )
            })?;
        lock(&self.log).check = StreamCheck::new(watch_from);
        Ok(response.into_inner())
    }

    fn record(&self, event: Delivered) {
        let at_us = u32::try_from(self.clock_base.elapsed().as_micros()).unwrap_or(u32::MAX);
        let mut log = lock(&self.log);
        log.check.record(event.sequence, event.create.is_some());
        if let Some(create) = event.create {
            log.arrivals.push(Arrival {
                create,
                sequence: event.sequence,
                at_us,
            });
        }
        drop(log);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
}
