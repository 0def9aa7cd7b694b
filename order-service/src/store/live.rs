//! Fan-out of committed events to every open watch stream, in two stages so that writers never
//! wait for watchers:
//!
//! 1. A publisher (the SQLite writer thread, the PostgreSQL tailer) hands each committed event to
//!    an unbounded queue: a push and at most one wake-up, whatever the number of watchers.
//! 2. One fan-out task drains everything queued and sends it, in order, on a bounded broadcast.
//!    Sending wakes the watchers waiting at that moment; a watcher woken by the first event of a
//!    batch is not waiting any more when the rest is sent, so a batch (a group commit, a page the
//!    tailer read) wakes each watcher once, and it then takes every event available in one poll.
//!
//! A watcher that falls more than the broadcast's capacity behind finds out (it lagged) instead
//! of slowing anyone down.
//!
//! Order and completeness: there is one queue and one task, so events reach the broadcast in the
//! order they were published. An event reaches the broadcast after it was published, which is
//! after it committed, so a receiver subscribed before an event committed receives it: the
//! subscribe-before-read rule of [`super::EventWatch`] holds with the extra stage. (Events
//! committed before a subscription may still reach it from the queue; the watch skips every
//! event at or below what it has delivered, as it does for the replay.)
//!
//! Each event is shared ([`LiveEvent`]) by every watcher, and so is its wire encoding: made once,
//! by the first watch stream that sends it.

use crate::domain::OrderEvent;
use orders_proto::encoded::EncodedOrderEvent;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use tokio::sync::{broadcast, mpsc};

/// Most queued items the fan-out task takes in one go.
const FAN_OUT_BATCH: usize = 1024;

/// A committed event as the live feed shares it with every watcher.
#[derive(Debug)]
pub struct LiveEvent {
    event: OrderEvent,
    /// The event as `WatchOrders` sends it, encoded by the first stream that needs it and then
    /// copied by every other (the store only keeps it; the gRPC layer makes it).
    encoded: OnceLock<EncodedOrderEvent>,
}

impl LiveEvent {
    /// A committed event, not encoded yet.
    pub fn new(event: OrderEvent) -> Self {
        LiveEvent {
            event,
            encoded: OnceLock::new(),
        }
    }

    /// The event's wire encoding: `encode` makes it the first time, every later call (from any
    /// watcher) gets the same bytes.
    pub fn encoded(
        &self,
        encode: impl FnOnce(&OrderEvent) -> EncodedOrderEvent,
    ) -> EncodedOrderEvent {
        self.encoded.get_or_init(|| encode(&self.event)).clone()
    }
}

impl Deref for LiveEvent {
    type Target = OrderEvent;

    fn deref(&self) -> &OrderEvent {
        &self.event
    }
}

/// What the live feed carries, in sequence order.
#[derive(Debug, Clone)]
pub enum Live {
    /// A committed event.
    Event(Arc<LiveEvent>),
    /// The events after `after` up to `through` were pruned before this process could publish
    /// them (it fell behind the log by more than the retention, e.g. while frozen): a subscriber
    /// that had not got past `through` cannot be given them, and must not go on as if it had.
    Pruned {
        /// The last sequence published before the hole.
        after: u64,
        /// The last sequence of the hole.
        through: u64,
    },
}

/// The publishing side of the live event feed, and where subscribers subscribe. Clones share
/// one feed; the feed closes (subscribers see `Closed`) when every clone is gone and the fan-out
/// task has sent what was queued.
#[derive(Debug, Clone)]
pub struct LiveEvents {
    /// To the fan-out task.
    queue: mpsc::UnboundedSender<Live>,
    /// Only for subscribing: the fan-out task sends.
    broadcast: broadcast::WeakSender<Live>,
}

impl LiveEvents {
    /// A feed that keeps up to `capacity` events for the slowest watcher. Starts its fan-out
    /// task, so it must be called inside a Tokio runtime.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        let (queue, queued) = mpsc::unbounded_channel();
        let broadcast = sender.downgrade();
        tokio::spawn(fan_out(queued, sender));
        LiveEvents { queue, broadcast }
    }

    /// Publishes a committed event (no one listening is fine). Never waits.
    pub fn publish(&self, event: OrderEvent) {
        self.enqueue(Live::Event(Arc::new(LiveEvent::new(event))));
    }

    /// Says that the events after `after` up to `through` cannot be published: pruned.
    pub fn publish_pruned(&self, after: u64, through: u64) {
        self.enqueue(Live::Pruned { after, through });
    }

    fn enqueue(&self, live: Live) {
        // Fails only once the fan-out task is gone: the runtime is shutting down, and so is
        // every watcher.
        let _ = self.queue.send(live);
    }

    /// A receiver of everything published from now on. (After the feed closed, one that is
    /// closed already.)
    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        match self.broadcast.upgrade() {
            Some(sender) => sender.subscribe(),
            None => broadcast::channel(1).1,
        }
    }
}

/// Sends everything queued on the broadcast, in order, draining the queue before each yield so
/// that a watcher woken by one event finds the events queued with it already there.
async fn fan_out(mut queued: mpsc::UnboundedReceiver<Live>, broadcast: broadcast::Sender<Live>) {
    let mut batch = Vec::with_capacity(FAN_OUT_BATCH);
    while queued.recv_many(&mut batch, FAN_OUT_BATCH).await > 0 {
        for live in batch.drain(..) {
            let _ = broadcast.send(live);
        }
    }
}
