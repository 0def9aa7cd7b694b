//! Load shedding: at most a fixed number of calls are worked on at once; a call over the limit is
//! refused at once with RESOURCE_EXHAUSTED (reason OVERLOADED, which clients may retry with
//! backoff) instead of waiting in an unbounded queue.
//!
//! There are two pools. `orders.v1` calls (authenticated before they get here) share the
//! configured number of slots, each held until the handler answered. The open services (health,
//! reflection: no token needed) have a pool of their own, so an overloaded order service never
//! makes health look dead; but since anyone can call them, their slot is held for the whole call,
//! response stream included, which bounds what unauthenticated callers can make the server hold
//! to [`OPEN_CALLS`] small calls, however many connections and streams they open.

use super::error::status;
use super::wire::Body;
use http_body::{Body as HttpBody, Frame, SizeHint};
use orders_proto::reason;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

/// Calls to the open services (health, reflection) in progress at once, server-wide.
pub const OPEN_CALLS: usize = 1024;
/// Largest request message of the open services. Their requests are a service or symbol name;
/// with tonic's default (4 MiB, reserved as soon as a message's length prefix arrives) anyone
/// could make the server hold 4 MiB per stream.
pub const OPEN_MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// The slots for calls in progress.
#[derive(Debug, Clone)]
pub struct Admission {
    orders: Arc<Semaphore>,
    open: Arc<Semaphore>,
}

/// A call's admission slot, held until [`Slot::release_with`] says.
#[derive(Debug)]
pub(crate) enum Slot {
    /// An `orders.v1` call: released when the handler answered (watch streams have their own
    /// limit).
    Orders(OwnedSemaphorePermit),
    /// A call to an open service: released when its response body ended or was dropped.
    Open(OwnedSemaphorePermit),
}

impl Admission {
    /// At most `max_calls` `orders.v1` calls in progress at once (and [`OPEN_CALLS`] others).
    pub fn new(max_calls: usize) -> Self {
        Admission {
            orders: Arc::new(Semaphore::new(max_calls)),
            open: Arc::new(Semaphore::new(OPEN_CALLS)),
        }
    }

    /// A slot for a call to `path`, or the refusal.
    pub(crate) fn admit(&self, path: &str) -> Result<Slot, Status> {
        let overloaded = |_| {
            status(
                Code::ResourceExhausted,
                reason::OVERLOADED,
                "the server is at its concurrency limit; retry with backoff",
            )
        };
        if path.starts_with("/orders.v1.") {
            Arc::clone(&self.orders)
                .try_acquire_owned()
                .map(Slot::Orders)
                .map_err(overloaded)
        } else {
            Arc::clone(&self.open)
                .try_acquire_owned()
                .map(Slot::Open)
                .map_err(overloaded)
        }
    }
}

impl Slot {
    /// Called with the handler's answer: gives an `orders.v1` slot back now, and ties an open
    /// service's slot to the response body.
    pub(crate) fn release_with(self, response: http::Response<Body>) -> http::Response<Body> {
        match self {
            Slot::Orders(_released) => response,
            Slot::Open(slot) => response.map(|body| Body::new(HoldingBody { inner: body, slot })),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds an admission slot until it ends or is dropped.
    struct HoldingBody {
        #[pin]
        inner: Body,
        slot: OwnedSemaphorePermit,
    }
}

impl HttpBody for HoldingBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
