//! The event log as a watch: stored events after a resume point, then live ones, as one ordered
//! stream with no gap and no duplicate at the seam — built only on the [`OrderStore`] primitives
//! every backend provides, so each backend gets the same seam and proves it by the same tests.
//!
//! The rules that make it exact:
//! - The live feed is subscribed to before anything stored is read, so every event committed from
//!   then on reaches the feed; every event at or below the last one delivered is skipped, so an
//!   event both read from the log and received live arrives once.
//! - A live watch starts after the last sequence committed, read *after* subscribing: an event
//!   committed later is published after that read and so reaches the feed; one at or below it had
//!   committed before. [`EventWatch::starts_after`] reports that point (the gRPC layer sends it as
//!   `orders-watch-from`), so a client cut off before its first event can resume from it.
//! - A resume point below what is still stored is `EVENTS_EXPIRED`, above the log's head
//!   `SEQUENCE_AHEAD`; a replay page is read in one snapshot with the pruned mark, so pruning
//!   cannot leave a silent gap.
//! - A watcher that falls further behind the live feed than its buffer is ended with
//!   [`Error::WatcherTooSlow`], naming the sequence to resume after; writers never wait for it.

use super::OrderStore;
use crate::domain::{Error, OrderEvent, OrderId, WatchStart};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Stored events read per query while replaying.
const REPLAY_PAGE: usize = 512;

/// An open watch of the event log, optionally of one order.
pub struct EventWatch {
    store: Arc<dyn OrderStore>,
    filter: Option<OrderId>,
    /// The last sequence delivered (or the resume point): nothing at or below it is delivered.
    cursor: u64,
    /// Where the watch started: every matching event after it is delivered.
    starts_after: u64,
    /// Still reading stored events after `cursor`.
    replaying: bool,
    /// Events read but not yet delivered.
    pending: VecDeque<Arc<OrderEvent>>,
    live: broadcast::Receiver<Arc<OrderEvent>>,
}

impl EventWatch {
    /// Opens a watch of `store` from `after_sequence` (0: from now, or from the order's current
    /// state when `filter` names one), of every order or only of `filter`.
    pub async fn open(
        store: Arc<dyn OrderStore>,
        filter: Option<OrderId>,
        after_sequence: u64,
    ) -> Result<EventWatch, Error> {
        // Subscribe first: everything committed from here on reaches us live.
        let live = store.subscribe();
        let mut watch = EventWatch {
            store,
            filter,
            cursor: 0,
            starts_after: 0,
            replaying: false,
            pending: VecDeque::new(),
            live,
        };
        match WatchStart::new(after_sequence, watch.filter.as_ref()) {
            WatchStart::Live => {
                let committed = watch.store.log_bounds().await?.latest;
                watch.cursor = committed;
                watch.starts_after = committed;
            }
            WatchStart::LatestOf(order) => {
                let latest = watch
                    .store
                    .latest_event(&order)
                    .await?
                    .ok_or(Error::NotFound(order))?;
                watch.starts_after = latest.sequence;
                watch.pending.push_back(Arc::new(latest));
            }
            WatchStart::After(after) => {
                let bounds = watch.store.log_bounds().await?;
                if after < bounds.complete_after {
                    return Err(Error::EventsExpired {
                        requested: after,
                        oldest: bounds.complete_after + 1,
                    });
                }
                if after > bounds.latest {
                    return Err(Error::SequenceAhead {
                        requested: after,
                        latest: bounds.latest,
                    });
                }
                watch.cursor = after;
                watch.starts_after = after;
                watch.replaying = true;
            }
        }
        Ok(watch)
    }

    /// The sequence after which this watch delivers every matching event (for a one-order watch
    /// started at 0: the sequence of the order's current state, which it delivers first).
    pub fn starts_after(&self) -> u64 {
        self.starts_after
    }

    /// The last sequence delivered, or the start: where a client resumes after this watch ends.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next event, in sequence order. An error ends the watch: the caller resumes from
    /// [`EventWatch::cursor`] (the error says so where the client must act).
    ///
    /// Cancel-safe between events: dropping the future while it waits for a live event loses
    /// nothing, and one dropped while reading a replay page reads that page again.
    pub async fn next(&mut self) -> Result<Arc<OrderEvent>, Error> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.cursor = event.sequence;
                return Ok(event);
            }
            if self.replaying {
                let page = self
                    .store
                    .events_after(self.cursor, self.filter.as_ref(), REPLAY_PAGE)
                    .await?;
                if page.is_empty() {
                    self.replaying = false;
                } else {
                    self.pending.extend(page.into_iter().map(Arc::new));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) => {
                    if event.sequence > self.cursor && self.wants(&event) {
                        self.cursor = event.sequence;
                        return Ok(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(Error::WatcherTooSlow {
                        missed,
                        resume_after: self.cursor,
                    });
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::Unavailable(
                        "the store's live event feed has closed (the store is shutting down)"
                            .into(),
                    ));
                }
            }
        }
    }

    fn wants(&self, event: &OrderEvent) -> bool {
        self.filter.as_ref().is_none_or(|id| *id == event.order.id)
    }
}
