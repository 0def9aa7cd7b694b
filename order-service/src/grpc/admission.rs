//! Load shedding: at most a fixed number of `orders.v1` calls are worked on at once; a call over
//! the limit is refused at once with RESOURCE_EXHAUSTED (reason OVERLOADED, which clients may
//! retry with backoff) instead of waiting in an unbounded queue. Health and reflection are never
//! shed, so an overloaded server is not mistaken for a dead one.

use super::error::status;
use orders_proto::reason;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

/// The slots for calls in progress.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
}

impl Admission {
    /// At most `max_calls` calls in progress at once.
    pub fn new(max_calls: usize) -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(max_calls)),
        }
    }

    /// A slot for a call to `path`, held until the permit is dropped; `Ok(None)` for calls that
    /// are never shed.
    pub(crate) fn admit(&self, path: &str) -> Result<Option<OwnedSemaphorePermit>, Status> {
        if !path.starts_with("/orders.v1.") {
            return Ok(None);
        }
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| {
                status(
                    Code::ResourceExhausted,
                    reason::OVERLOADED,
                    "the server is at its concurrency limit; retry with backoff",
                )
            })
    }
}
