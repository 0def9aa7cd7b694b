//! `WatchOrders` streams: stored events after the resume point, then live events, with no gap
//! and no duplicate at the seam. The live feed is subscribed to before anything stored is read,
//! and every event at or below the last sequence sent is skipped, so an event committed while
//! the stored ones are being read arrives exactly once.
//!
//! Every stream says where it starts ([`OpenedWatch::watch_from`], sent as the initial metadata
//! `orders-watch-from`): for a live watch that is the last sequence committed after the feed
//! was subscribed to, so a client cut off before its first event can resume from it and miss
//! nothing.

use super::error::status;
use super::orders::WatchError;
use crate::domain::{Error, OrderEvent, OrderId, WatchStart};
use crate::store::OrderStore;
use futures::Stream;
use order_status_telemetry::{Metrics, WatchStreamGuard};
use orders_proto::reason;
use orders_proto::v1 as pb;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

/// The response stream of `WatchOrders`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::OrderEvent, Status>> + Send>>;

/// Stored events read per query while replaying.
const REPLAY_PAGE: usize = 512;

/// Limits and signals shared by every watch stream.
#[derive(Clone)]
pub struct WatchOptions {
    /// One permit per open stream; when none is left new watches are refused.
    pub slots: Arc<Semaphore>,
    /// Cancelled when the server begins shutting down: open streams end with UNAVAILABLE so
    /// their clients resume on another replica or after the restart.
    pub shutdown: CancellationToken,
    /// Counts open streams and events sent.
    pub metrics: Metrics,
}

/// A watch that opened: its events, and the sequence N after which it delivers every matching
/// event (after the snapshot event of a one-order watch started at 0).
pub(crate) struct OpenedWatch {
    pub(crate) events: EventStream,
    pub(crate) watch_from: u64,
}

pub(crate) async fn open_watch(
    store: Arc<dyn OrderStore>,
    options: &WatchOptions,
    filter: Option<OrderId>,
    after_sequence: u64,
) -> Result<OpenedWatch, WatchError> {
    if options.shutdown.is_cancelled() {
        return Err(WatchError::Refused(shutting_down()));
    }
    let permit = Arc::clone(&options.slots)
        .try_acquire_owned()
        .map_err(|_| {
            WatchError::Refused(status(
                Code::ResourceExhausted,
                reason::TOO_MANY_WATCHERS,
                "too many open watch streams; retry later",
            ))
        })?;
    // Subscribe first: everything committed from here on reaches us live.
    let live = store.subscribe();
    let mut watch = Watch {
        store: Arc::clone(&store),
        filter,
        cursor: 0,
        replaying: false,
        pending: VecDeque::new(),
        live,
        shutdown: options.shutdown.clone(),
        _slot: permit,
        _open: options.metrics.watch_stream_opened(),
        metrics: options.metrics.clone(),
        ended: false,
    };
    let watch_from = match WatchStart::new(after_sequence, watch.filter.as_ref()) {
        WatchStart::Live => {
            // Read after subscribing: an event committed after this read is published after it,
            // so it reaches `live`; one at or below it had committed before, and belongs to
            // what a client resuming from this point has already been told is past.
            let committed = store.log_bounds().await?.latest;
            watch.cursor = committed;
            committed
        }
        WatchStart::LatestOf(order) => {
            let latest = store
                .latest_event(&order)
                .await?
                .ok_or(Error::NotFound(order))?;
            let snapshot = latest.sequence;
            watch.pending.push_back(latest);
            snapshot
        }
        WatchStart::After(after) => {
            let bounds = store.log_bounds().await?;
            if after < bounds.complete_after {
                return Err(Error::EventsExpired {
                    requested: after,
                    oldest: bounds.complete_after + 1,
                }
                .into());
            }
            if after > bounds.latest {
                return Err(Error::SequenceAhead {
                    requested: after,
                    latest: bounds.latest,
                }
                .into());
            }
            watch.cursor = after;
            watch.replaying = true;
            after
        }
    };
    Ok(OpenedWatch {
        events: Box::pin(futures::stream::unfold(watch, |mut watch| async {
            let item = watch.next().await?;
            Some((item, watch))
        })),
        watch_from,
    })
}

struct Watch {
    store: Arc<dyn OrderStore>,
    filter: Option<OrderId>,
    /// The last sequence sent (or the resume point): nothing at or below it is sent again.
    cursor: u64,
    /// Still reading stored events after `cursor`.
    replaying: bool,
    /// Events read but not yet sent.
    pending: VecDeque<OrderEvent>,
    live: broadcast::Receiver<Arc<OrderEvent>>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
    /// Keeps this stream counted as open until it is dropped.
    _open: WatchStreamGuard,
    metrics: Metrics,
    ended: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<pb::OrderEvent, Status>> {
        if self.ended {
            return None;
        }
        loop {
            if self.shutdown.is_cancelled() {
                return self.end(shutting_down());
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(self.send(&event)));
            }
            if self.replaying {
                match self
                    .store
                    .events_after(self.cursor, self.filter.as_ref(), REPLAY_PAGE)
                    .await
                {
                    Ok(page) if page.is_empty() => self.replaying = false,
                    Ok(page) => self.pending.extend(page),
                    Err(error) => return self.end(Status::from(error)),
                }
                continue;
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return self.end(shutting_down()),
                received = self.live.recv() => match received {
                    Ok(event) => {
                        if event.sequence > self.cursor && self.wants(&event) {
                            return Some(Ok(self.send(&event)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        return self.end(status(
                            Code::ResourceExhausted,
                            reason::WATCHER_TOO_SLOW,
                            format!(
                                "this watcher fell {missed} events behind; \
                                 resume with after_sequence={}",
                                self.cursor
                            ),
                        ));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return self.end(shutting_down());
                    }
                },
            }
        }
    }

    /// Moves the cursor past `event` and encodes it.
    fn send(&mut self, event: &OrderEvent) -> pb::OrderEvent {
        self.cursor = event.sequence;
        self.metrics.record_watch_event_sent();
        pb::OrderEvent::from(event)
    }

    fn wants(&self, event: &OrderEvent) -> bool {
        self.filter.as_ref().is_none_or(|id| *id == event.order.id)
    }

    fn end(&mut self, status: Status) -> Option<Result<pb::OrderEvent, Status>> {
        self.ended = true;
        Some(Err(status))
    }
}

fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        reason::SHUTTING_DOWN,
        "the server is shutting down; resume the watch with after_sequence",
    )
}
