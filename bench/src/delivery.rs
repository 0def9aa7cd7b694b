//! Cross-replica delivery latency: CreateOrder on replica A at a steady rate (open loop: each
//! create is sent on its tick, whether or not earlier ones have been answered) while a
//! `WatchOrders` watcher on replica B receives the events. For every order acknowledged in the
//! measured window it records the time from A's *send* to B's delivery (an upper bound of
//! commit → delivery) and from A's *acknowledgement* to B's delivery (a lower bound; negative
//! when B's watcher had the event before A's answer reached the client).

use crate::load::{self, Caller, ErrorTally, Target};
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How the creates are paced and how long to wait for their events.
#[derive(Debug, Clone, Copy)]
pub struct PacedSettings {
    /// Creates sent per second.
    pub rate_per_second: f64,
    /// Paced creates before the measured window.
    pub warmup: Duration,
    /// The measured window: creates *sent* in it are measured.
    pub measure: Duration,
    /// The deadline of every create.
    pub call_deadline: Duration,
    /// How long after the last create's answer the watcher may take to deliver the rest
    /// before they count as undelivered.
    pub settle: Duration,
}

/// What one or more measured windows produced.
#[derive(Debug, Clone, Default)]
pub struct DeliveryResult {
    /// Creates sent in the window and acknowledged.
    pub acknowledged: u64,
    /// Creates sent in the window that failed, by status code.
    pub failed: BTreeMap<String, ErrorTally>,
    /// Latency of each acknowledged create, µs.
    pub create_latencies_us: Vec<u32>,
    /// Per delivered order: µs from A's send to B's delivery.
    pub send_to_delivery_us: Vec<i64>,
    /// Per delivered order: µs from A's acknowledgement to B's delivery (may be negative).
    pub ack_to_delivery_us: Vec<i64>,
    /// Acknowledged orders B's watcher had not delivered `settle` after the last answer.
    pub undelivered: u64,
    /// Events whose sequence was not above the previous one's on B's watcher.
    pub out_of_order: u64,
    /// The measured windows' total length.
    pub window: Duration,
}

impl DeliveryResult {
    /// Adds another window's figures.
    pub fn merge(&mut self, other: &DeliveryResult) {
        self.acknowledged += other.acknowledged;
        for (code, tally) in &other.failed {
            let mine = self.failed.entry(code.clone()).or_default();
            mine.count += tally.count;
            if mine.example.is_empty() {
                mine.example.clone_from(&tally.example);
            }
        }
        self.create_latencies_us
            .extend_from_slice(&other.create_latencies_us);
        self.send_to_delivery_us
            .extend_from_slice(&other.send_to_delivery_us);
        self.ack_to_delivery_us
            .extend_from_slice(&other.ack_to_delivery_us);
        self.undelivered += other.undelivered;
        self.out_of_order += other.out_of_order;
        self.window += other.window;
    }

    /// Failed creates.
    pub fn failed_count(&self) -> u64 {
        self.failed.values().map(|tally| tally.count).sum()
    }
}

/// The value at quantile `q` (0..=1) of ascending `sorted` (nearest rank); 0 when empty.
pub fn percentile_signed(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Signed microseconds as milliseconds with two decimals.
pub fn signed_millis(micros: i64) -> String {
    format!("{:.2}ms", micros as f64 / 1e3)
}

/// An event seen by the watcher: the order, its sequence, when it arrived.
type Seen = (String, u64, Instant);

/// Opens a live watch of all orders on `watcher` and forwards what it delivers, stamped on
/// arrival, until the stream ends or the receiver is dropped.
async fn watch(
    watcher: &Target,
    deliveries: mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let mut client = OrderServiceClient::new(load::connect(watcher).await?);
    let mut request = tonic::Request::new(pb::WatchOrdersRequest {
        order_id: String::new(),
        after_sequence: 0,
    });
    request
        .metadata_mut()
        .insert("authorization", watcher.authorization.clone());
    let mut stream = client.watch_orders(request).await?.into_inner();
    Ok(tokio::spawn(async move {
        // Keeps the client (and its connection) alive as long as the stream.
        let _client = client;
        while let Some(event) = stream.message().await? {
            let arrived = Instant::now();
            let order_id = event.order.map(|order| order.order_id).unwrap_or_default();
            if deliveries
                .send((order_id, event.sequence, arrived))
                .is_err()
            {
                return Ok(());
            }
        }
        anyhow::bail!("the watch on replica B ended")
    }))
}

/// Runs one measurement: a watcher on `watcher` (replica B), creates on `creator` (replica A)
/// paced at `settings.rate_per_second` with keys `<key_prefix>-<n>`.
pub async fn measure(
    creator: &Target,
    watcher: &Target,
    settings: PacedSettings,
    key_prefix: &str,
) -> anyhow::Result<DeliveryResult> {
    let (sender, mut deliveries) = mpsc::unbounded_channel();
    let watch_task = watch(watcher, sender).await?;
    let channel = load::connect(creator).await?;
    let caller = || {
        Caller::new(
            channel.clone(),
            creator.authorization.clone(),
            settings.call_deadline,
        )
    };

    // The watch is live once an order created on A after it was opened comes through on B.
    let mut last_sequence;
    let mut probe = 0;
    let ready_by = Instant::now() + Duration::from_secs(10);
    'ready: loop {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "the watcher on replica B delivered none of {probe} orders created on replica A in 10s"
        );
        let order = caller()
            .create(format!("{key_prefix}-probe-{probe}"))
            .await
            .map_err(|(code, message)| {
                anyhow::anyhow!("a probe create failed: {code}: {message}")
            })?;
        probe += 1;
        let wait_until = Instant::now() + Duration::from_millis(500);
        while let Ok(Some((order_id, sequence, _))) =
            tokio::time::timeout_at(wait_until.into(), deliveries.recv()).await
        {
            last_sequence = sequence;
            if order_id == order.order_id {
                break 'ready;
            }
        }
    }

    let period = Duration::from_secs_f64(1.0 / settings.rate_per_second);
    let start = Instant::now() + settings.warmup;
    let end = start + settings.measure;
    let mut ticker = tokio::time::interval(period);
    let mut creates = JoinSet::new();
    for n in 0u64.. {
        ticker.tick().await;
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let mut call = caller();
        let key = format!("{key_prefix}-{n}");
        creates.spawn(async move {
            let outcome = call.create(key).await;
            (sent, outcome, Instant::now())
        });
    }

    let mut result = DeliveryResult {
        window: settings.measure,
        ..DeliveryResult::default()
    };
    // Acknowledged in the window: order id -> (sent, acknowledged).
    let mut waiting: HashMap<String, (Instant, Instant)> = HashMap::new();
    while let Some(joined) = creates.join_next().await {
        let (sent, outcome, answered) = joined?;
        if sent < start {
            continue;
        }
        match outcome {
            Ok(order) => {
                result.acknowledged += 1;
                let micros = (answered - sent).as_micros();
                result
                    .create_latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
                waiting.insert(order.order_id, (sent, answered));
            }
            Err((code, message)) => {
                let tally = result.failed.entry(code).or_default();
                tally.count += 1;
                if tally.example.is_empty() {
                    tally.example = message;
                }
            }
        }
    }

    let settle_until = Instant::now() + settings.settle;
    while !waiting.is_empty() {
        match tokio::time::timeout_at(settle_until.into(), deliveries.recv()).await {
            Ok(Some((order_id, sequence, arrived))) => {
                if sequence <= last_sequence {
                    result.out_of_order += 1;
                }
                last_sequence = sequence;
                if let Some((sent, answered)) = waiting.remove(&order_id) {
                    result
                        .send_to_delivery_us
                        .push(signed_micros(arrived, sent));
                    result
                        .ack_to_delivery_us
                        .push(signed_micros(arrived, answered));
                }
            }
            // The watch ended: its task says why.
            Ok(None) => {
                watch_task.await??;
                anyhow::bail!("the watch on replica B ended");
            }
            Err(_) => break,
        }
    }
    result.undelivered = waiting.len() as u64;
    watch_task.abort();
    Ok(result)
}

/// `later - earlier` in microseconds, negative when `later` is the earlier instant.
fn signed_micros(later: Instant, earlier: Instant) -> i64 {
    match later.checked_duration_since(earlier) {
        Some(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        None => -i64::try_from((earlier - later).as_micros()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_percentiles_and_differences() {
        let sorted = [-300, -100, 0, 200, 900];
        assert_eq!(percentile_signed(&sorted, 0.5), 0);
        assert_eq!(percentile_signed(&sorted, 0.99), 900);
        assert_eq!(percentile_signed(&sorted, 0.0), -300);
        assert_eq!(percentile_signed(&[], 0.5), 0);
        let now = Instant::now();
        let later = now + Duration::from_micros(1500);
        assert_eq!(signed_micros(later, now), 1500);
        assert_eq!(signed_micros(now, later), -1500);
        assert_eq!(signed_millis(-1500), "-1.50ms");
    }
}
