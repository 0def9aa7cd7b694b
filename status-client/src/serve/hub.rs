//! Shared upstream watches: every event-stream client of one caller is fed from one upstream
//! all-orders `WatchOrders` stream, fanned out here (one-order clients through a per-order
//! index, so an event wakes only the clients of its order).
//!
//! **Who may share.** A share is keyed by the caller's exact `Authorization` value. The gateway
//! acts with its caller's rights, so two callers with different credentials never share: each
//! gets what order-service tells *its* token (its own error, its own events), even when they
//! watch the same thing.
//!
//! **Why one all-orders upstream per caller, filtered here per order, rather than one upstream
//! per (caller, order).** 10,000 browsers on 10,000 different orders would otherwise hold 10,000
//! upstream streams: order-service's whole default watcher budget (`ORDER_SERVICE_MAX_WATCHERS`,
//! 10,000), on about 20 connections. Filtered here, they hold one. order-service stays the
//! authority over each order: a one-order client first reads the order's current state with a
//! short one-order watch of its own, which also answers `NOT_FOUND` or `PERMISSION_DENIED` for
//! that caller, and is closed once read. Joining the share *before* reading that state closes
//! the seam: the state is the order's latest event as of a moment after the share was already
//! open, so every later event of the order has a greater sequence and reaches the share.
//!
//! **Resume.** A share keeps its most recent events and the position from which it has every
//! event (`covered_after`). An all-orders client resuming at or after that position gets the
//! kept events after its `Last-Event-ID`, then live ones; one resuming from further back reads
//! its own catch-up stream from order-service and joins the share as soon as the share's kept
//! events reach back to where it is. A one-order client resuming from before the order's
//! current state reads the order's events up to that state with a catch-up stream of its own,
//! which it closes once there. Sequences only grow, so a client skips anything at or below the
//! last sequence it was sent: every event once, in order.
//!
//! **Slow clients.** The fan-out never waits for a client: one that falls more than the fan-out
//! buffer behind is cut off with a `WATCHER_TOO_SLOW` error event and its browser resumes with
//! `Last-Event-ID`, while the others go on.
//!
//! A share's upstream stream closes when its last client has been gone for [`LINGER`], so
//! clients that reconnect (a slow one cut off, a page reload) resume from its kept events.
//! Upstream streams run on connections of their own ([`WatchPool`]), never on the connection
//! of unary calls.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use orders_proto::reason;
use orders_proto::v1::OrderEvent;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;

use super::errors::ApiError;
use super::watch_pool::{PooledStream, WatchPool};

/// How long a share's upstream stays open after its last client left.
pub(crate) const LINGER: Duration = Duration::from_secs(5);

/// How far an all-orders client may fall behind before it is cut off.
const ALL_ORDERS_FAN_OUT_BUFFER: usize = 1024;
/// The same for a one-order client: an order has a handful of events, and there may be a
/// channel for each of thousands of orders.
const ONE_ORDER_FAN_OUT_BUFFER: usize = 32;

/// What a client of the hub receives.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    /// An order event, already in its JSON form (encoded once per share, not per client).
    Event {
        /// The event's sequence: its SSE `id:`.
        sequence: u64,
        /// The `OrderEvent` in the proto3 JSON mapping.
        json: Arc<str>,
    },
    /// The watch ended with this error; nothing follows.
    Failed(ApiError),
}

impl Delivery {
    fn event(event: &OrderEvent) -> Result<Self, serde_json::Error> {
        Ok(Self::Event {
            sequence: event.sequence,
            json: serde_json::to_string(event)?.into(),
        })
    }
}

/// The upstream watches shared by the gateway's event-stream clients.
#[derive(Debug)]
pub(crate) struct WatchHub {
    pool: WatchPool,
    shares: Mutex<HashMap<ShareKey, Arc<SharedWatch>>>,
    replay_events: usize,
    /// The open timeout of a share's upstream stream (each re-open after a break too).
    open_timeout: Duration,
    stopping: CancellationToken,
}

/// Who asks: only clients with equal keys share an upstream stream.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ShareKey {
    /// The caller's `Authorization` value, byte for byte.
    authorization: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for ShareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential itself.
        f.debug_struct("ShareKey")
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .finish()
    }
}

#[derive(Debug)]
struct SharedWatch {
    key: ShareKey,
    /// Clients joined or about to join; changed only under the hub's lock, so that a share is
    /// never retired while someone is joining it.
    members: AtomicUsize,
    /// Signalled when `members` drops to zero.
    last_left: Notify,
    opened: watch::Sender<Opening>,
    state: Mutex<ShareState>,
}

#[derive(Debug, Clone)]
enum Opening {
    Pending,
    Open,
    Failed(ApiError),
}

#[derive(Debug)]
struct ShareState {
    /// Every matching event with a greater sequence is in `recent` or still to be sent on
    /// `live`; `None` until the upstream has told (its `orders-watch-from` or its first event).
    covered_after: Option<u64>,
    /// The most recent events, oldest first.
    recent: VecDeque<(u64, Arc<str>)>,
    live: broadcast::Sender<Delivery>,
    /// The events of each order some one-order client watches.
    per_order: HashMap<String, broadcast::Sender<Delivery>>,
    /// Why the share ended, once it has.
    ended: Option<ApiError>,
}

impl ShareState {
    /// The position after which a client joining now receives every event.
    fn position(&self) -> Option<u64> {
        let newest = self.recent.back().map(|(sequence, _)| *sequence);
        newest.max(self.covered_after)
    }
}

impl WatchHub {
    /// A hub opening its upstream streams through `pool`, keeping `replay_events` recent events
    /// per share; its shares end when `stopping` is cancelled.
    pub(crate) fn new(
        pool: WatchPool,
        replay_events: usize,
        open_timeout: Duration,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            pool,
            shares: Mutex::new(HashMap::new()),
            replay_events: replay_events.max(1),
            open_timeout,
            stopping,
        }
    }

    fn shares(&self) -> MutexGuard<'_, HashMap<ShareKey, Arc<SharedWatch>>> {
        self.shares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes the holder of `authorization` to the events of `order_id` (empty: all
    /// orders) after `after_sequence` (0: from now; for one order, its current state first),
    /// waiting at most `wait` for the upstream watches to open. Fails with order-service's
    /// answer to this caller when a watch is refused.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        authorization: Option<AsciiMetadataValue>,
        order_id: String,
        after_sequence: u64,
        wait: Duration,
    ) -> Result<Subscription, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let membership = self.join_or_start(ShareKey { authorization });
        let share = membership.share.clone();
        let mut opened = share.opened.subscribe();
        let outcome = match tokio::time::timeout_at(
            deadline,
            opened.wait_for(|state| !matches!(state, Opening::Pending)),
        )
        .await
        {
            Err(_elapsed) => Opening::Failed(not_open_in(wait)),
            Ok(Err(_closed)) => Opening::Failed(shutting_down()),
            Ok(Ok(state)) => state.clone(),
        };
        if let Opening::Failed(error) = outcome {
            return Err(error);
        }
        let phase = if order_id.is_empty() {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.all_orders(&share, after_sequence, remaining).await?
        } else {
            self.one_order(&share, order_id, after_sequence, deadline, wait)
                .await?
        };
        let first_position = match &phase {
            Phase::Live { first_position, .. } => *first_position,
            _ => None,
        };
        Ok(Subscription {
            membership,
            after: after_sequence,
            first_position,
            phase,
        })
    }

    /// Every order's events from the open `share`: from its kept events when they reach back
    /// to `after_sequence`, else through a catch-up stream first (opened within `wait`).
    async fn all_orders(
        &self,
        share: &SharedWatch,
        after_sequence: u64,
        wait: Duration,
    ) -> Result<Phase, ApiError> {
        if let Some(joined) = share.join(after_sequence) {
            return Ok(joined);
        }
        // The share's kept events do not reach back that far: read from order-service until
        // they do.
        let stream = self
            .pool
            .open("", after_sequence, share.key.authorization.as_ref(), wait)
            .await?;
        Ok(Phase::CatchUp(Box::new(stream)))
    }

    /// One order's events from the open `share`, after its current state read with a short
    /// one-order watch (see the module's documentation for why there is no gap).
    async fn one_order(
        &self,
        share: &Arc<SharedWatch>,
        order_id: String,
        after_sequence: u64,
        deadline: tokio::time::Instant,
        wait: Duration,
    ) -> Result<Phase, ApiError> {
        // First in: every event the share receives from now on is kept for this client.
        let live = share.watch_order(order_id.clone());
        let authorization = share.key.authorization.as_ref();
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut current = self
            .pool
            .open(&order_id, 0, authorization, remaining)
            .await?;
        let current = match tokio::time::timeout_at(deadline, current.next()).await {
            Err(_elapsed) => return Err(not_open_in(wait)),
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(error))) => return Err(error.into()),
            Ok(None) => {
                return Err(ApiError::local(
                    Code::Unavailable,
                    "the order's watch ended before its current state",
                    reason::SHUTTING_DOWN,
                ));
            }
        };
        let mut backlog = VecDeque::new();
        let mut catch_up = None;
        if after_sequence == 0 {
            backlog.push_back(Delivery::event(&current).map_err(cannot_encode)?);
        } else if after_sequence < current.sequence {
            // Events of the order between the client's position and its current state.
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let stream = self
                .pool
                .open(&order_id, after_sequence, authorization, remaining)
                .await?;
            catch_up = Some((Box::new(stream), current.sequence));
        }
        Ok(Phase::OneOrder {
            backlog,
            catch_up,
            live,
        })
    }

    /// The share of `key`, started when there is none, with one more member.
    fn join_or_start(self: &Arc<Self>, key: ShareKey) -> Membership {
        let mut shares = self.shares();
        let share = match shares.get(&key) {
            Some(share) => share.clone(),
            None => {
                let share = Arc::new(SharedWatch::new(key.clone()));
                shares.insert(key, share.clone());
                tokio::spawn(self.clone().run_share(share.clone()));
                share
            }
        };
        share.members.fetch_add(1, Ordering::AcqRel);
        Membership { share }
    }

    /// Removes `share` from the hub if it has no member; whether it did.
    fn retire_if_unused(&self, share: &Arc<SharedWatch>) -> bool {
        let mut shares = self.shares();
        if share.members.load(Ordering::Acquire) != 0 {
            return false;
        }
        self.forget(&mut shares, share);
        true
    }

    fn forget(&self, shares: &mut HashMap<ShareKey, Arc<SharedWatch>>, share: &Arc<SharedWatch>) {
        if shares
            .get(&share.key)
            .is_some_and(|current| Arc::ptr_eq(current, share))
        {
            shares.remove(&share.key);
        }
    }

    /// Opens the share's upstream stream and feeds its clients until the stream fails for
    /// good, the hub stops, or the share has had no client for [`LINGER`].
    async fn run_share(self: Arc<Self>, share: Arc<SharedWatch>) {
        let opened = self
            .pool
            .open("", 0, share.key.authorization.as_ref(), self.open_timeout)
            .await;
        let mut stream: PooledStream = match opened {
            Ok(stream) => stream,
            Err(error) => {
                self.forget(&mut self.shares(), &share);
                share.end(error.clone());
                share.opened.send_replace(Opening::Failed(error));
                return;
            }
        };
        // For a watch from now, order-service's `orders-watch-from`: joining clients start
        // there, and learn it as their first SSE id, before any event has come.
        let resume_point = stream.resume_point();
        if resume_point > 0 {
            share.state().covered_after = Some(resume_point);
        }
        share.opened.send_replace(Opening::Open);
        let mut retire_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = self.stopping.cancelled() => {
                    self.forget(&mut self.shares(), &share);
                    share.end(shutting_down());
                    return;
                }
                item = stream.next() => match item {
                    Some(Ok(event)) => share.publish(&event, self.replay_events),
                    Some(Err(error)) => {
                        self.forget(&mut self.shares(), &share);
                        share.end(error.into());
                        return;
                    }
                    None => {
                        self.forget(&mut self.shares(), &share);
                        share.end(ApiError::local(
                            Code::Unavailable,
                            "the upstream watch ended",
                            reason::SHUTTING_DOWN,
                        ));
                        return;
                    }
                },
                () = share.last_left.notified(), if retire_at.is_none() => {
                    if share.members.load(Ordering::Acquire) == 0 {
                        retire_at = Some(tokio::time::Instant::now() + LINGER);
                    }
                }
                () = sleep_until(retire_at) => {
                    retire_at = None;
                    if self.retire_if_unused(&share) {
                        tracing::debug!(share = ?share.key, "no client left; closing the upstream watch");
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn not_open_in(wait: Duration) -> ApiError {
    ApiError::local(
        Code::DeadlineExceeded,
        format!(
            "the watch did not open within {}",
            humantime::format_duration(wait)
        ),
        reason::DEADLINE_EXCEEDED,
    )
}

fn cannot_encode(error: serde_json::Error) -> ApiError {
    ApiError::local(
        Code::Internal,
        format!("cannot encode an order event: {error}"),
        reason::INTERNAL,
    )
}

fn shutting_down() -> ApiError {
    ApiError::local(
        Code::Unavailable,
        "the service is shutting down",
        reason::SHUTTING_DOWN,
    )
}

impl SharedWatch {
    fn new(key: ShareKey) -> Self {
        Self {
            key,
            members: AtomicUsize::new(0),
            last_left: Notify::new(),
            opened: watch::Sender::new(Opening::Pending),
            state: Mutex::new(ShareState {
                covered_after: None,
                recent: VecDeque::new(),
                live: broadcast::Sender::new(ALL_ORDERS_FAN_OUT_BUFFER),
                per_order: HashMap::new(),
                ended: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, ShareState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `event` and sends it to every client, without waiting for any of them.
    fn publish(&self, event: &OrderEvent, replay_events: usize) {
        let delivery = match Delivery::event(event) {
            Ok(delivery) => delivery,
            Err(error) => {
                // Generated messages always encode; should one not, its clients resume past it
                // rather than all of them being cut off.
                tracing::error!(%error, sequence = event.sequence, "cannot encode an order event");
                return;
            }
        };
        let Delivery::Event { sequence, json } = &delivery else {
            return;
        };
        let mut state = self.state();
        // Where order-service did not say (an older server), the first event does: a live
        // stream delivers in sequence order, so every event from it on comes.
        if state.covered_after.is_none() {
            state.covered_after = Some(sequence.saturating_sub(1));
        }
        state.recent.push_back((*sequence, json.clone()));
        while state.recent.len() > replay_events {
            if let Some((dropped, _)) = state.recent.pop_front() {
                state.covered_after = state.covered_after.max(Some(dropped));
            }
        }
        if let Some(order) = event.order.as_ref()
            && let Some(order_channel) = state.per_order.get(&order.order_id)
        {
            // An error only means that no client is listening right now.
            let _ = order_channel.send(delivery.clone());
        }
        let _ = state.live.send(delivery);
    }

    /// A channel of `order_id`'s events from now on, for a one-order client.
    fn watch_order(self: &Arc<Self>, order_id: String) -> OrderChannel {
        let mut state = self.state();
        let receiver = state
            .per_order
            .entry(order_id.clone())
            .or_insert_with(|| broadcast::Sender::new(ONE_ORDER_FAN_OUT_BUFFER))
            .subscribe();
        if let Some(error) = &state.ended {
            // Ended before this client came: it gets the reason right away.
            let _ = state.per_order[&order_id].send(Delivery::Failed(error.clone()));
        }
        OrderChannel {
            receiver: Some(receiver),
            share: self.clone(),
            order_id,
        }
    }

    /// Ends the share: its clients get `error` after what they have not read yet.
    fn end(&self, error: ApiError) {
        let mut state = self.state();
        let _ = state.live.send(Delivery::Failed(error.clone()));
        for order_channel in state.per_order.values() {
            let _ = order_channel.send(Delivery::Failed(error.clone()));
        }
        state.ended = Some(error);
    }

    /// A live all-orders subscription after `after_sequence` (0: from now), if the kept events
    /// reach back that far.
    fn join(&self, after_sequence: u64) -> Option<Phase> {
        let state = self.state();
        if let Some(error) = &state.ended {
            return Some(Phase::Live {
                backlog: VecDeque::from([Delivery::Failed(error.clone())]),
                live: None,
                first_position: None,
            });
        }
        let deliveries = |after: u64| {
            state
                .recent
                .iter()
                .filter(move |(sequence, _)| *sequence > after)
                .map(|(sequence, json)| Delivery::Event {
                    sequence: *sequence,
                    json: json.clone(),
                })
        };
        let (backlog, first_position): (VecDeque<Delivery>, _) = if after_sequence == 0 {
            // Live from now: nothing kept is replayed; the client learns where "now" is.
            (VecDeque::new(), state.position())
        } else if state
            .covered_after
            .is_some_and(|covered| covered <= after_sequence)
        {
            (deliveries(after_sequence).collect(), None)
        } else {
            return None;
        };
        Some(Phase::Live {
            backlog,
            live: Some(state.live.subscribe()),
            first_position,
        })
    }
}

/// A client's place in a share; the share knows when its last client has gone.
#[derive(Debug)]
struct Membership {
    share: Arc<SharedWatch>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.share.members.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.share.last_left.notify_one();
        }
    }
}

/// One event-stream client's view of a share.
pub(crate) struct Subscription {
    membership: Membership,
    /// The last sequence sent to this client (or where it asked to start).
    after: u64,
    first_position: Option<u64>,
    phase: Phase,
}

enum Phase {
    /// Reading the share: kept events first, then live ones.
    Live {
        backlog: VecDeque<Delivery>,
        live: Option<broadcast::Receiver<Delivery>>,
        first_position: Option<u64>,
    },
    /// Reading its own upstream stream until the share's kept events reach back to it.
    CatchUp(Box<PooledStream>),
    /// One order: the backlog (its current state), then a catch-up stream of its own up to the
    /// given sequence (a resume from before the current state), then the share's events of
    /// that order.
    OneOrder {
        backlog: VecDeque<Delivery>,
        catch_up: Option<(Box<PooledStream>, u64)>,
        live: OrderChannel,
    },
    Done,
}

/// A one-order client's channel from a share; the share forgets the order when its last
/// client has gone.
struct OrderChannel {
    receiver: Option<broadcast::Receiver<Delivery>>,
    share: Arc<SharedWatch>,
    order_id: String,
}

impl Drop for OrderChannel {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut state = self.share.state();
        if state
            .per_order
            .get(&self.order_id)
            .is_some_and(|channel| channel.receiver_count() == 0)
        {
            state.per_order.remove(&self.order_id);
        }
    }
}

impl Subscription {
    /// Where the subscription starts when it is "from now" on all orders: every event with a
    /// greater sequence will be delivered. Sent as the first SSE `id:`, so a browser that
    /// reconnects before the first event resumes from it.
    pub(crate) fn first_position(&self) -> Option<u64> {
        self.first_position
    }

    /// The next delivery; `None` once the subscription is over.
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        loop {
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Live { backlog, live, .. } => {
                    let delivery = match backlog.pop_front() {
                        Some(delivery) => delivery,
                        None => receive(live.as_mut()?).await,
                    };
                    if let Some(delivery) = self.pass(delivery) {
                        return Some(delivery);
                    }
                }
                Phase::OneOrder {
                    backlog,
                    catch_up,
                    live,
                } => {
                    let delivery = if let Some(delivery) = backlog.pop_front() {
                        delivery
                    } else if let Some((stream, until)) = catch_up {
                        if self.after >= *until {
                            // Caught up with the order's current state; the share has the rest.
                            *catch_up = None;
                            continue;
                        }
                        match stream.next().await {
                            Some(Ok(event)) => match Delivery::event(&event) {
                                Ok(delivery) => delivery,
                                Err(error) => Delivery::Failed(cannot_encode(error)),
                            },
                            Some(Err(error)) => Delivery::Failed(error.into()),
                            None => Delivery::Failed(ApiError::local(
                                Code::Unavailable,
                                "the catch-up watch ended",
                                reason::SHUTTING_DOWN,
                            )),
                        }
                    } else {
                        receive(live.receiver.as_mut()?).await
                    };
                    if let Some(delivery) = self.pass(delivery) {
                        return Some(delivery);
                    }
                }
                Phase::CatchUp(stream) => {
                    let item = stream.next().await;
                    let delivery = match item {
                        Some(Ok(event)) => match Delivery::event(&event) {
                            Ok(delivery) => delivery,
                            Err(error) => {
                                tracing::error!(%error, sequence = event.sequence, "cannot encode an order event");
                                continue;
                            }
                        },
                        Some(Err(error)) => Delivery::Failed(error.into()),
                        None => {
                            self.phase = Phase::Done;
                            return None;
                        }
                    };
                    let passed = self.pass(delivery);
                    if matches!(self.phase, Phase::CatchUp(_))
                        && let Some(phase) = self.membership.share.join(self.after)
                    {
                        // Caught up: the share has everything after this client's position.
                        self.phase = phase;
                    }
                    if passed.is_some() {
                        return passed;
                    }
                }
            }
        }
    }

    /// Lets through what this client has not had yet; ends the subscription on a failure.
    fn pass(&mut self, delivery: Delivery) -> Option<Delivery> {
        match &delivery {
            Delivery::Event { sequence, .. } if *sequence <= self.after => None,
            Delivery::Event { sequence, .. } => {
                self.after = *sequence;
                Some(delivery)
            }
            Delivery::Failed(_) => {
                self.phase = Phase::Done;
                Some(delivery)
            }
        }
    }
}

/// The next delivery of a share's channel; falling too far behind or the share going away is a
/// final one.
async fn receive(receiver: &mut broadcast::Receiver<Delivery>) -> Delivery {
    match receiver.recv().await {
        Ok(delivery) => delivery,
        Err(broadcast::error::RecvError::Lagged(missed)) => Delivery::Failed(too_slow(missed)),
        Err(broadcast::error::RecvError::Closed) => Delivery::Failed(shutting_down()),
    }
}

fn too_slow(missed: u64) -> ApiError {
    ApiError::local(
        Code::ResourceExhausted,
        format!(
            "this event stream fell {missed} events behind and was cut off; reconnect with Last-Event-ID to resume"
        ),
        reason::WATCHER_TOO_SLOW,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: u64) -> OrderEvent {
        OrderEvent {
            sequence,
            ..Default::default()
        }
    }

    fn sequences(phase: &Phase) -> Vec<u64> {
        match phase {
            Phase::Live { backlog, .. } => backlog
                .iter()
                .filter_map(|d| match d {
                    Delivery::Event { sequence, .. } => Some(*sequence),
                    Delivery::Failed(_) => None,
                })
                .collect(),
            _ => panic!("not live"),
        }
    }

    #[test]
    fn a_resume_joins_only_where_the_kept_events_reach() {
        let share = SharedWatch::new(ShareKey {
            authorization: None,
        });
        // Nothing known yet: a resume must read its own stream.
        assert!(share.join(3).is_none());
        for sequence in [10, 11, 12, 13] {
            share.publish(&event(sequence), 3);
        }
        // Kept: 11, 12, 13; everything after 10 is covered.
        assert!(share.join(9).is_none());
        assert_eq!(sequences(&share.join(10).unwrap()), [11, 12, 13]);
        assert_eq!(sequences(&share.join(12).unwrap()), [13]);
        // Live from now replays nothing and starts at the newest.
        let live = share.join(0).unwrap();
        assert!(sequences(&live).is_empty());
        assert!(matches!(
            live,
            Phase::Live {
                first_position: Some(13),
                ..
            }
        ));
    }

    fn order_event(sequence: u64, order_id: &str) -> OrderEvent {
        OrderEvent {
            sequence,
            order: Some(orders_proto::v1::Order {
                order_id: order_id.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn one_order_channels_get_only_their_orders_events_and_are_forgotten_after() {
        let share = Arc::new(SharedWatch::new(ShareKey {
            authorization: None,
        }));
        let mut a = share.watch_order("a".to_owned());
        let b = share.watch_order("b".to_owned());
        for (sequence, order) in [(1, "a"), (2, "b"), (3, "c"), (4, "a")] {
            share.publish(&order_event(sequence, order), 8);
        }
        for expected in [1, 4] {
            match receive(a.receiver.as_mut().unwrap()).await {
                Delivery::Event { sequence, .. } => assert_eq!(sequence, expected),
                other => panic!("{other:?}"),
            }
        }
        drop(b);
        assert!(!share.state().per_order.contains_key("b"));
        assert!(share.state().per_order.contains_key("a"));
    }

    fn subscription(share: &Arc<SharedWatch>, after: u64) -> Subscription {
        share.members.fetch_add(1, Ordering::AcqRel);
        Subscription {
            membership: Membership {
                share: share.clone(),
            },
            after,
            first_position: None,
            phase: share.join(after).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_slow_client_is_cut_off_without_holding_up_the_others() {
        let share = Arc::new(SharedWatch::new(ShareKey {
            authorization: None,
        }));
        share.publish(&event(1), 8);
        let mut slow = subscription(&share, 0);
        let mut keeping_up = subscription(&share, 0);
        for sequence in 2..=(ALL_ORDERS_FAN_OUT_BUFFER as u64 + 10) {
            share.publish(&event(sequence), 8);
            match keeping_up.next().await {
                Some(Delivery::Event { sequence: got, .. }) => assert_eq!(got, sequence),
                other => panic!("{other:?}"),
            }
        }
        match slow.next().await {
            Some(Delivery::Failed(error)) => {
                assert!(error.to_json().contains("WATCHER_TOO_SLOW"), "{error:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(slow.next().await.is_none());
        // A reconnect within the kept events resumes from them.
        let mut resumed = subscription(&share, ALL_ORDERS_FAN_OUT_BUFFER as u64 + 5);
        match resumed.next().await {
            Some(Delivery::Event { sequence, .. }) => {
                assert_eq!(sequence, ALL_ORDERS_FAN_OUT_BUFFER as u64 + 6)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_differ_by_credential_and_never_print_it() {
        let key = |value: Option<&'static str>| ShareKey {
            authorization: value.map(AsciiMetadataValue::from_static),
        };
        let a = key(Some("Bearer a"));
        assert_ne!(a, key(Some("Bearer b")));
        assert_ne!(a, key(Some("bearer a")));
        assert_ne!(a, key(None));
        assert!(!format!("{a:?}").contains("Bearer"));
    }
}
