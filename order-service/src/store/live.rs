//! Fan-out of committed events to every open watch stream. A bounded broadcast: writers never
//! wait for watchers, and a watcher that falls more than the capacity behind finds out (it lagged)
//! instead of slowing anyone down.

use crate::domain::OrderEvent;
use std::sync::Arc;
use tokio::sync::broadcast;

/// What the live feed carries, in sequence order.
#[derive(Debug, Clone)]
pub enum Live {
    /// A committed event.
    Event(Arc<OrderEvent>),
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

/// The sending side of the live event feed.
#[derive(Debug, Clone)]
pub struct LiveEvents {
    sender: broadcast::Sender<Live>,
}

impl LiveEvents {
    /// A feed that keeps up to `capacity` events for the slowest watcher.
    pub fn new(capacity: usize) -> Self {
        LiveEvents {
            sender: broadcast::channel(capacity).0,
        }
    }

    /// Publishes a committed event (no one listening is fine).
    pub fn publish(&self, event: OrderEvent) {
        let _ = self.sender.send(Live::Event(Arc::new(event)));
    }

    /// Says that the events after `after` up to `through` cannot be published: pruned.
    pub fn publish_pruned(&self, after: u64, through: u64) {
        let _ = self.sender.send(Live::Pruned { after, through });
    }

    /// A receiver of everything published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.sender.subscribe()
    }
}
