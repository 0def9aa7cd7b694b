//! `WatchOrders` streams: the store's [`EventWatch`] (the ordered, gap-free replay/live seam and
//! its resume rules live under `store/`) mapped to the wire, with what belongs to the service:
//! a slot per open stream, metrics, and ending every stream with UNAVAILABLE when the server
//! shuts down so clients resume elsewhere. Every stream says where it starts
//! ([`OpenedWatch::watch_from`], sent as the initial metadata `orders-watch-from`).

use super::error::status;
use super::orders::WatchError;
use crate::domain::OrderId;
use crate::store::{EventWatch, OrderStore};
use futures::Stream;
use order_status_telemetry::{Metrics, WatchStreamGuard};
use orders_proto::reason;
use orders_proto::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

/// The response stream of `WatchOrders`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::OrderEvent, Status>> + Send>>;

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
    let events = EventWatch::open(store, filter, after_sequence).await?;
    let watch_from = events.starts_after();
    let watch = Watch {
        events,
        shutdown: options.shutdown.clone(),
        _slot: permit,
        _open: options.metrics.watch_stream_opened(),
        metrics: options.metrics.clone(),
        ended: false,
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
    events: EventWatch,
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
        let next = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(shutting_down()),
            next = self.events.next() => next.map_err(Status::from),
        };
        match next {
            Ok(event) => {
                self.metrics.record_watch_event_sent();
                Some(Ok(pb::OrderEvent::from(&*event)))
            }
            Err(status) => {
                self.ended = true;
                Some(Err(status))
            }
        }
    }
}

fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        reason::SHUTTING_DOWN,
        "the server is shutting down; resume the watch with after_sequence",
    )
}
