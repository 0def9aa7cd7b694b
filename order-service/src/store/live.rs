//! Fan-out of committed events to every open watch stream. A bounded broadcast: writers never
//! wait for watchers, and a watcher that falls more than the capacity behind finds out (it lagged)
//! instead of slowing anyone down.

use crate::domain::OrderEvent;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The sending side of the live event feed.
#[derive(Debug, Clone)]
pub struct LiveEvents {
    sender: broadcast::Sender<Arc<OrderEvent>>,
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
        let _ = self.sender.send(Arc::new(event));
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OrderEvent>> {
        self.sender.subscribe()
    }
}
