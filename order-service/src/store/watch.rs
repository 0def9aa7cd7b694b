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
//! - Should the live feed announce a hole that pruning made before it could publish it
//!   ([`Live::Pruned`]), a watch that had not got past it ends with `EVENTS_EXPIRED`.
//! - A watcher that falls further behind the live feed than its buffer is ended with
//!   [`Error::WatcherTooSlow`], naming the sequence to resume after; writers never wait for it.
//! - The live feed reaches the broadcast through a fan-out stage ([`super::LiveEvents`]) that
//!   sends an event only after it was published, i.e. after it committed: the first rule still
//!   holds, and events that committed before the subscription but were sent after it are skipped
//!   by the second.
//!
//! A watch is polled in place ([`EventWatch::poll_next`]): every event already received is
//! returned without waiting, so a watch stream woken once drains a whole batch.

use super::{Live, LiveEvent, LiveReceiver, OrderStore};
use crate::domain::{Error, OrderEvent, OrderId, WatchStart};
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;

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
    /// Where the replay of stored events after `cursor` is.
    replay: Replay,
    /// Events read but not yet delivered.
    pending: VecDeque<Arc<LiveEvent>>,
    /// The live feed, polled in place (one registration per wait, not one future per event).
    live: LiveReceiver,
    /// The span the watch was opened in (the WatchOrders call's): the replay's reads run in it,
    /// so they belong to the call's trace although the response body is polled outside it.
    span: tracing::Span,
}

/// The replay of stored events, which comes before the live feed.
enum Replay {
    /// Over (or never needed): events come from the live feed.
    Done,
    /// The next page after the cursor is to be read.
    Due,
    /// That page is being read (kept across polls, so a watch polled again does not read it twice).
    Reading(BoxFuture<'static, Result<Vec<OrderEvent>, Error>>),
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
            replay: Replay::Done,
            pending: VecDeque::new(),
            live,
            span: tracing::Span::current(),
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
                watch.pending.push_back(Arc::new(LiveEvent::new(latest)));
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
                watch.replay = Replay::Due;
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
    pub async fn next(&mut self) -> Result<Arc<LiveEvent>, Error> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next event, in sequence order: everything already available is returned by
    /// successive calls without waiting, so a stream woken once by a batch of live events drains
    /// it in one go. On `Pending` the task is woken when an event (or an error) may be ready; a
    /// page of the replay being read stays here between polls. An error ends the watch, as for
    /// [`EventWatch::next`].
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<LiveEvent>, Error>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.cursor = event.sequence;
                return Poll::Ready(Ok(event));
            }
            match &mut self.replay {
                Replay::Done => {}
                Replay::Due => {
                    let (store, filter, after) =
                        (Arc::clone(&self.store), self.filter.clone(), self.cursor);
                    self.replay = Replay::Reading(Box::pin(
                        async move {
                            store
                                .events_after(after, filter.as_ref(), REPLAY_PAGE)
                                .await
                        }
                        .instrument(self.span.clone()),
                    ));
                    continue;
                }
                Replay::Reading(page) => {
                    let page = ready!(page.as_mut().poll(cx));
                    self.replay = Replay::Due;
                    let page = page?;
                    if page.is_empty() {
                        self.replay = Replay::Done;
                    } else {
                        self.pending.extend(
                            page.into_iter()
                                .map(|event| Arc::new(LiveEvent::new(event))),
                        );
                    }
                    continue;
                }
            }
            match ready!(self.live.poll_recv(cx)) {
                Ok(Live::Event(event)) => {
                    if event.sequence > self.cursor && self.wants(&event) {
                        self.cursor = event.sequence;
                        return Poll::Ready(Ok(event));
                    }
                }
                Ok(Live::Pruned { through, .. }) => {
                    // Whether the pruned events concerned this watch is unknown: it ends rather
                    // than skip them silently; resuming from its cursor is then refused as
                    // expired, as a replay that pruning overtook is.
                    if self.cursor < through {
                        return Poll::Ready(Err(Error::EventsExpired {
                            requested: self.cursor,
                            oldest: through + 1,
                        }));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    return Poll::Ready(Err(Error::WatcherTooSlow {
                        missed,
                        resume_after: self.cursor,
                    }));
                }
                Err(RecvError::Closed) => {
                    return Poll::Ready(Err(Error::Unavailable(
                        "the store's live event feed has closed (the store is shutting down)"
                            .into(),
                    )));
                }
            }
        }
    }

    fn wants(&self, event: &OrderEvent) -> bool {
        self.filter.as_ref().is_none_or(|id| *id == event.order.id)
    }
}
