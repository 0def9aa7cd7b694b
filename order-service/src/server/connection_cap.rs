//! The cap on open client connections. A connection over the cap is closed as soon as it is
//! accepted, so its client sees a closed connection at once (and can go to another replica)
//! rather than waiting unanswered in the kernel's backlog. Reaching the cap is logged at most
//! once per [`LOG_EVERY`], with the number of connections closed since the last line.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The shortest time between two "connection limit reached" lines.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Slots for open connections; each connection's task holds one until it ends.
#[derive(Debug)]
pub(crate) struct ConnectionCap {
    slots: Arc<Semaphore>,
    limit: usize,
    /// Connections closed at the cap since the last log line.
    refused: u64,
    last_logged: Option<Instant>,
}

impl ConnectionCap {
    /// At most `limit` connections open at once.
    pub(crate) fn new(limit: usize) -> Self {
        ConnectionCap {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            refused: 0,
            last_logged: None,
        }
    }

    /// A slot for a just-accepted connection, or `None` (logged, rate-limited) at the cap: then
    /// the caller closes the connection.
    pub(crate) fn admit(&mut self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(slot);
        }
        self.refused += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= LOG_EVERY)
        {
            tracing::warn!(
                limit = self.limit,
                refused = self.refused,
                "connection limit reached (ORDER_SERVICE_MAX_CONNECTIONS): closing new \
                 connections until open ones end"
            );
            self.last_logged = Some(now);
            self.refused = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn admits_up_to_the_limit_and_again_once_a_connection_ended() {
        let mut cap = ConnectionCap::new(2);
        let first = cap.admit().expect("first");
        let _second = cap.admit().expect("second");
        assert!(cap.admit().is_none());
        drop(first);
        assert!(cap.admit().is_some());
    }
}
