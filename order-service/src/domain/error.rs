//! The one error type of the domain and the store: every failure a caller can meet, each with
//! enough detail for the transport to map it to a gRPC status without guessing.

use super::{OrderId, OrderStatus};

/// One invalid field of a request, reported with its path (`items[0].quantity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message, as `google.rpc.BadRequest` wants it.
    pub field: String,
    /// What is wrong with it, readable by a person.
    pub description: String,
}

/// Why an order operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request broke one or more validation rules; all of them are listed.
    #[error("invalid request: {} violation(s)", .0.len())]
    Invalid(Vec<FieldViolation>),
    /// No order has this id.
    #[error("order {0} not found")]
    NotFound(OrderId),
    /// No webhook endpoint has this id.
    #[error("webhook endpoint {0} not found")]
    EndpointNotFound(String),
    /// The status machine does not allow this change.
    #[error("an order in status {from} cannot become {to}")]
    InvalidTransition {
        /// The order's current status.
        from: OrderStatus,
        /// The status asked for.
        to: OrderStatus,
    },
    /// Optimistic concurrency: the caller's view of the order is stale.
    #[error("expected version {expected}, but the order is at version {actual}")]
    VersionMismatch {
        /// What the caller sent.
        expected: i64,
        /// What the order has.
        actual: i64,
    },
    /// The idempotency key was used before with a different request.
    #[error("request_id was already used with a different request")]
    IdempotencyKeyReused,
    /// A request with the same idempotency key is being processed right now.
    #[error("a request with this request_id is in progress; retry")]
    RequestInProgress,
    /// The call's deadline passed before the work was done; nothing was changed.
    #[error("deadline exceeded before the change was made")]
    DeadlineExceeded,
    /// A watch asked to resume from events that are no longer retained.
    #[error("events after sequence {requested} are not retained; the oldest kept is {oldest}")]
    EventsExpired {
        /// The `after_sequence` asked for.
        requested: u64,
        /// The oldest sequence still stored.
        oldest: u64,
    },
    /// A watch asked to resume after a sequence that was never assigned.
    #[error("sequence {requested} is ahead of the event log (latest is {latest})")]
    SequenceAhead {
        /// The `after_sequence` asked for.
        requested: u64,
        /// The latest sequence assigned.
        latest: u64,
    },
    /// A watcher fell further behind the live events than its buffer holds and was ended, so
    /// that writers never wait for it; it resumes from `resume_after`.
    #[error("this watcher fell {missed} events behind; resume with after_sequence={resume_after}")]
    WatcherTooSlow {
        /// Live events it missed.
        missed: u64,
        /// The last sequence it was given.
        resume_after: u64,
    },
    /// The database cannot be reached or is busy beyond its timeout; retrying may help.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A bug or a broken invariant; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// An [`Error::Invalid`] with a single violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// An [`Error::Internal`] from any error.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Internal(cause.into())
    }
}
