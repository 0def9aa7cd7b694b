//! `WatchOrders` streams: the store's [`EventWatch`] (the ordered, gap-free replay/live seam and
//! its resume rules live under `store/`) mapped to the wire, with what belongs to the service:
//! a slot per open stream, metrics, and ending every stream with UNAVAILABLE when the server
//! shuts down so clients resume elsewhere. Every stream says where it starts
//! ([`OpenedWatch::watch_from`], sent as the initial metadata `orders-watch-from`).
//!
//! Per event a stream does little: the event's encoding is made once and shared by every
//! stream ([`LiveEvent::encoded`]); the stream is polled in place, staying registered with the
//! live feed and the shutdown signal while it waits instead of registering for each event, and
//! a poll that no wake-up preceded returns Pending without polling either (`Wakeup`).

use super::error::status;
use super::orders::WatchError;
use crate::domain::OrderId;
use crate::store::{EventWatch, LiveEvent, OrderStore};
use futures::Stream;
use futures::task::{ArcWake, AtomicWaker, waker_ref};
use order_status_telemetry::{Metrics, WatchStreamGuard};
use orders_proto::encoded::EncodedOrderEvent;
use orders_proto::reason;
use orders_proto::v1 as pb;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Code, Status};

/// The response stream of `WatchOrders`: each event's bytes, encoded once for every stream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<EncodedOrderEvent, Status>> + Send>>;

/// Events a stream sends in a row, without once finding nothing ready, before it checks for
/// shutdown anyway (it checks every time it runs out of events).
const SHUTDOWN_CHECK_EVERY: u32 = 256;

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
        shutdown: Box::pin(options.shutdown.clone().cancelled_owned()),
        since_shutdown_check: 0,
        wakeup: Arc::new(Wakeup::default()),
        waiting: false,
        _slot: permit,
        _open: options.metrics.watch_stream_opened(),
        metrics: options.metrics.clone(),
        ended: false,
    };
    Ok(OpenedWatch {
        events: Box::pin(watch),
        watch_from,
    })
}

/// One `WatchOrders` stream. Polled by the response body ([`super::watch_route`]), which sends
/// an event's shared frame as it is, or gathers everything a wake-up made available into one
/// HTTP/2 DATA frame.
struct Watch {
    events: EventWatch,
    /// Made once per stream: it stays registered with the shutdown token between events,
    /// instead of registering and unregistering for each one.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Events sent since the shutdown future was last polled.
    since_shutdown_check: u32,
    /// The waker the live feed and the shutdown future are polled with.
    wakeup: Arc<Wakeup>,
    /// The last poll found nothing ready and left `wakeup` registered with both.
    waiting: bool,
    _slot: OwnedSemaphorePermit,
    /// Keeps this stream counted as open until it is dropped.
    _open: WatchStreamGuard,
    metrics: Metrics,
    ended: bool,
}

impl Watch {
    fn end(&mut self, status: Status) -> Poll<Option<Result<EncodedOrderEvent, Status>>> {
        self.ended = true;
        Poll::Ready(Some(Err(status)))
    }

    /// Whether the server is shutting down (registers the task to be woken when it does).
    fn shutting_down(&mut self, cx: &mut Context<'_>) -> bool {
        self.since_shutdown_check = 0;
        self.shutdown.as_mut().poll(cx).is_ready()
    }
}

impl Stream for Watch {
    type Item = Result<EncodedOrderEvent, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // Registered before the flag is read: a wake-up after the read wakes this task.
        this.wakeup.task.register(cx.waker());
        let woken = this.wakeup.woken.swap(false, Ordering::AcqRel);
        if this.waiting && !woken {
            return Poll::Pending;
        }
        this.waiting = false;
        let wakeup = Arc::clone(&this.wakeup);
        let waker = waker_ref(&wakeup);
        let cx = &mut Context::from_waker(&waker);
        // Shutdown is checked whenever no event is ready (so a waiting stream is woken by it),
        // and at least every SHUTDOWN_CHECK_EVERY events of a long replay.
        if this.since_shutdown_check >= SHUTDOWN_CHECK_EVERY && this.shutting_down(cx) {
            return this.end(shutting_down());
        }
        match this.events.poll_next(cx) {
            Poll::Ready(Ok(event)) => {
                this.since_shutdown_check += 1;
                this.metrics.record_watch_event_sent();
                Poll::Ready(Some(Ok(encoded(&event))))
            }
            Poll::Ready(Err(error)) => this.end(Status::from(error)),
            Poll::Pending if this.shutting_down(cx) => this.end(shutting_down()),
            Poll::Pending => {
                this.waiting = true;
                Poll::Pending
            }
        }
    }
}

/// The waker a watch stream polls its live feed and shutdown future with: it wakes the stream's
/// task and remembers that it did. hyper and tonic poll a response body several times per event
/// (three polls that find nothing for each one that finds an event); a poll that no wake-up
/// preceded answers Pending at once instead of polling both again, which takes a lock each.
#[derive(Default)]
struct Wakeup {
    task: AtomicWaker,
    woken: AtomicBool,
}

impl ArcWake for Wakeup {
    fn wake_by_ref(wakeup: &Arc<Self>) {
        wakeup.woken.store(true, Ordering::Release);
        wakeup.task.wake();
    }
}

/// The event's encoding, made by the first stream that sends it and shared by the others.
fn encoded(event: &LiveEvent) -> EncodedOrderEvent {
    event.encoded(|event| EncodedOrderEvent::new(&pb::OrderEvent::from(event)))
}

fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        reason::SHUTTING_DOWN,
        "the server is shutting down; resume the watch with after_sequence",
    )
}
