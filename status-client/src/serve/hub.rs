//! Shared upstream watches: event-stream clients that ask for the same thing share one
//! upstream `WatchOrders` stream, fanned out here.
//!
//! **Who may share.** A share is keyed by the caller's exact `Authorization` value and the
//! order filter. The gateway acts with its caller's rights, so two callers with different
//! credentials never share: each gets what order-service tells *its* token (its own error,
//! its own events), even when they watch the same thing.
//!
//! **Why one share per (caller, filter)** rather than one all-events upstream per caller
//! filtered locally per order: order-service stays the authority over what a filter yields
//! (`NOT_FOUND` for an unknown order, the order's current state first, any future per-order
//! permission), and the hub has one path for every filter. The cost is one upstream stream per
//! distinct (caller, filter); those are spread over as many watch connections as they need
//! ([`WatchPool`]), never over the connection of unary calls, so 10,000 distinct filters cost
//! about 20 connections, not a starved `GET`.
//!
//! **Resume.** Each share keeps its most recent events and the position from which it has
//! every matching event (`covered_after`). A client resuming at or after that position gets
//! the kept events after its `Last-Event-ID`, then live ones; one resuming from further back
//! first reads its own catch-up stream from order-service and joins the share as soon as the
//! share's kept events reach back to where it is. Sequences only grow, so a client skips
//! anything at or below the last sequence it was sent: every event once, in order.
//!
//! **Slow clients.** The fan-out never waits for a client: one that falls more than the fan-out
//! buffer behind is cut off with a `WATCHER_TOO_SLOW` error event and its browser resumes with
//! `Last-Event-ID`, while the others go on.
//!
//! A share's upstream stream closes when its last client has been gone for [`LINGER`], so
//! clients that reconnect (a slow one cut off, a page reload) resume from its kept events.

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

/// How far a client of an all-orders share may fall behind before it is cut off.
const ALL_ORDERS_FAN_OUT_BUFFER: usize = 1024;
/// The same for a one-order share: an order has a handful of events, and thousands of such
/// shares must stay small.
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

/// Who asks for what: only clients with equal keys share an upstream stream.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ShareKey {
    /// The caller's `Authorization` value, byte for byte.
    authorization: Option<AsciiMetadataValue>,
    /// The order watched; empty for all orders.
    order_id: String,
}

impl ShareKey {
    /// The key of a caller presenting `authorization` and watching `order_id` (empty: all).
    pub(crate) fn new(authorization: Option<AsciiMetadataValue>, order_id: String) -> Self {
        Self {
            authorization,
            order_id,
        }
    }
}

impl std::fmt::Debug for ShareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential itself.
        f.debug_struct("ShareKey")
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .field("order_id", &self.order_id)
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

    /// Subscribes to `key`'s events after `after_sequence` (0: from now; for one order, its
    /// current state first), waiting at most `wait` for the upstream watch to open. Fails with
    /// order-service's answer to this caller when the watch is refused.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        key: ShareKey,
        after_sequence: u64,
        wait: Duration,
    ) -> Result<Subscription, ApiError> {
        let membership = self.join_or_start(key);
        let share = membership.share.clone();
        let mut opened = share.opened.subscribe();
        let outcome = match tokio::time::timeout(
            wait,
            opened.wait_for(|state| !matches!(state, Opening::Pending)),
        )
        .await
        {
            Err(_elapsed) => Opening::Failed(ApiError::local(
                Code::DeadlineExceeded,
                format!(
                    "the watch did not open within {}",
                    humantime::format_duration(wait)
                ),
                reason::DEADLINE_EXCEEDED,
            )),
            Ok(Err(_closed)) => Opening::Failed(shutting_down()),
            Ok(Ok(state)) => state.clone(),
        };
        if let Opening::Failed(error) = outcome {
            return Err(error);
        }
        let joined = share.join(after_sequence);
        let phase = match joined {
            Some(joined) => joined,
            None => {
                // The share's kept events do not reach back that far: read from order-service
                // until they do.
                let stream = self
                    .pool
                    .open(
                        &share.key.order_id,
                        after_sequence,
                        share.key.authorization.as_ref(),
                        wait,
                    )
                    .await?;
                Phase::CatchUp(Box::new(stream))
            }
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
            .open(
                &share.key.order_id,
                0,
                share.key.authorization.as_ref(),
                self.open_timeout,
            )
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

fn shutting_down() -> ApiError {
    ApiError::local(
        Code::Unavailable,
        "the service is shutting down",
        reason::SHUTTING_DOWN,
    )
}

impl SharedWatch {
    fn new(key: ShareKey) -> Self {
        let fan_out = if key.order_id.is_empty() {
            ALL_ORDERS_FAN_OUT_BUFFER
        } else {
            ONE_ORDER_FAN_OUT_BUFFER
        };
        Self {
            key,
            members: AtomicUsize::new(0),
            last_left: Notify::new(),
            opened: watch::Sender::new(Opening::Pending),
            state: Mutex::new(ShareState {
                covered_after: None,
                recent: VecDeque::new(),
                live: broadcast::Sender::new(fan_out),
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
        // Where order-service did not say (an older server; a one-order watch, whose snapshot
        // comes first), the first event does: every matching event from it on comes (a live
        // stream delivers in sequence order; a one-order stream starts with the order's latest
        // event).
        if state.covered_after.is_none() {
            state.covered_after = Some(sequence.saturating_sub(1));
        }
        state.recent.push_back((*sequence, json.clone()));
        while state.recent.len() > replay_events {
            if let Some((dropped, _)) = state.recent.pop_front() {
                state.covered_after = state.covered_after.max(Some(dropped));
            }
        }
        // An error only means that no client is listening right now.
        let _ = state.live.send(delivery);
    }

    /// Ends the share: its clients get `error` after what they have not read yet.
    fn end(&self, error: ApiError) {
        let mut state = self.state();
        let _ = state.live.send(Delivery::Failed(error.clone()));
        state.ended = Some(error);
    }

    /// A live subscription after `after_sequence`, if the kept events reach back that far.
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
            if self.key.order_id.is_empty() {
                // Live from now: nothing kept is replayed; the client learns where "now" is.
                (VecDeque::new(), state.position())
            } else {
                // One order from now: its current state (the newest kept event) first.
                (
                    state
                        .recent
                        .back()
                        .map(|(sequence, json)| Delivery::Event {
                            sequence: *sequence,
                            json: json.clone(),
                        })
                        .into_iter()
                        .collect(),
                    None,
                )
            }
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
    Done,
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
                        None => match live.as_mut()?.recv().await {
                            Ok(delivery) => delivery,
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                self.phase = Phase::Done;
                                return Some(Delivery::Failed(too_slow(missed)));
                            }
                            Err(broadcast::error::RecvError::Closed) => {
                                self.phase = Phase::Done;
                                return None;
                            }
                        },
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
        let share = SharedWatch::new(ShareKey::new(None, String::new()));
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

    #[test]
    fn one_order_from_now_starts_with_its_current_state() {
        let share = SharedWatch::new(ShareKey::new(None, "o-1".to_owned()));
        share.publish(&event(4), 8);
        share.publish(&event(9), 8);
        assert_eq!(sequences(&share.join(0).unwrap()), [9]);
        // The first (snapshot) event says everything from 4 on is here.
        assert_eq!(sequences(&share.join(3).unwrap()), [4, 9]);
        assert!(share.join(2).is_none());
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
        let share = Arc::new(SharedWatch::new(ShareKey::new(None, String::new())));
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
        let a = ShareKey::new(
            Some(AsciiMetadataValue::from_static("Bearer a")),
            "x".into(),
        );
        let b = ShareKey::new(
            Some(AsciiMetadataValue::from_static("Bearer b")),
            "x".into(),
        );
        assert_ne!(a, b);
        assert_ne!(a, ShareKey::new(None, "x".into()));
        assert!(!format!("{a:?}").contains("Bearer"));
    }
}
