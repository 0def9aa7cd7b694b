//! Persistence of webhook endpoints and their delivery log, behind a trait of its own that both
//! backends implement beside [`super::OrderStore`]. What a backend must guarantee:
//!
//! - **The cursor moves with the log.** [`WebhookStore::record_attempt`] inserts the attempt and
//!   (when it was acknowledged) advances the endpoint's `delivered_through_sequence` in one
//!   transaction, and only if the cursor is still the one the attempt started from and the
//!   caller still holds the endpoint's lease: a replay, an update or another replica that moved
//!   it in between makes the attempt's record a no-op (`Ok(false)`), never a lost or skipped event.
//! - **One deliverer per endpoint.** [`WebhookStore::claim_endpoints`] hands each enabled
//!   endpoint to one replica at a time (a lease, renewed by claiming again, taken over once it
//!   expired); on SQLite the one process holds every lease.
//! - **Secrets are opaque here.** The store keeps the sealed text it is given (encrypted or not is
//!   the caller's business, see `crate::webhooks::secrets`), never the secret's meaning.
//! - **Idempotent creation.** A creation with a principal's used `request_id` returns the first
//!   endpoint, or [`Error::IdempotencyKeyReused`] when the request differs.

use crate::domain::{Error, Fingerprint, Principal, RequestId, UnixMicros};
use std::time::Duration;

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    /// Server-assigned id (`we_…`).
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Whether events are being delivered.
    pub enabled: bool,
    /// Event types delivered; empty means all.
    pub event_types: Vec<String>,
    /// Free text.
    pub description: String,
    /// Why the service disabled it (empty otherwise).
    pub disabled_reason: String,
    /// Every event up to this sequence was delivered or skipped.
    pub cursor: u64,
    /// When it was created.
    pub create_time: UnixMicros,
    /// When it last changed.
    pub update_time: UnixMicros,
    /// The current signing secret, sealed.
    pub secret: String,
    /// The secret before the last rotation, sealed, and when it stops signing.
    pub previous_secret: Option<(String, UnixMicros)>,
    /// Failed attempts of the event after the cursor so far.
    pub failed_attempts: u32,
    /// When the next attempt of that event is due, if one failed.
    pub next_attempt: Option<UnixMicros>,
    /// Position in creation order (page tokens).
    pub seq: i64,
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Its id.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// Event types; empty means all.
    pub event_types: Vec<String>,
    /// Free text.
    pub description: String,
    /// The sealed secret.
    pub secret: String,
    /// Where delivery starts: the log's head when it is created.
    pub cursor: u64,
    /// Creation time.
    pub now: UnixMicros,
}

/// Who creates an endpoint, with which idempotency key, for which request.
#[derive(Debug, Clone)]
pub struct CreateKey {
    /// The caller.
    pub principal: Principal,
    /// Its idempotency key.
    pub request_id: RequestId,
    /// What it asked for.
    pub fingerprint: Fingerprint,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    /// A new URL.
    pub url: Option<String>,
    /// Enable or disable. Enabling clears the disabled reason and the failed attempts, so
    /// delivery resumes from the cursor at once.
    pub enabled: Option<bool>,
    /// New event types.
    pub event_types: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
}

/// One attempt to deliver one event, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// Position in the log (page tokens, newest first).
    pub id: i64,
    /// The `webhook-id` header.
    pub webhook_id: String,
    /// The event's sequence.
    pub sequence: u64,
    /// 1 for the first attempt of this event.
    pub attempt: u32,
    /// When it was made.
    pub attempt_time: UnixMicros,
    /// The receiver's status, 0 when none.
    pub http_status: i32,
    /// What went wrong; empty on success.
    pub error: String,
    /// How long it took.
    pub latency: Duration,
    /// When the next attempt is due (none when delivered or given up).
    pub next_attempt: Option<UnixMicros>,
    /// Acknowledged with a 2xx.
    pub delivered: bool,
}

/// An attempt's outcome to record, and how the endpoint moves with it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The endpoint.
    pub endpoint_id: String,
    /// The cursor the attempt started from: the record applies only if it is still there.
    pub expected_cursor: u64,
    /// What is logged (its `id` is ignored).
    pub delivery: DeliveryRow,
    /// Disable the endpoint with this reason (410 Gone, schedule exhausted).
    pub disable: Option<String>,
}

/// Storage of webhook endpoints and deliveries; see the module documentation for guarantees.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Creates an endpoint, or returns the one created before under the same key (`true`:
    /// replayed).
    async fn create_endpoint(
        &self,
        key: Option<CreateKey>,
        endpoint: NewEndpoint,
    ) -> Result<(EndpointRow, bool), Error>;

    /// One endpoint.
    async fn endpoint(&self, id: &str) -> Result<EndpointRow, Error>;

    /// Up to `limit` endpoints after creation position `after`, oldest first.
    async fn endpoints(&self, after: i64, limit: usize) -> Result<Vec<EndpointRow>, Error>;

    /// Changes an endpoint.
    async fn update_endpoint(
        &self,
        id: &str,
        update: EndpointUpdate,
        now: UnixMicros,
    ) -> Result<EndpointRow, Error>;

    /// Removes an endpoint and its delivery log.
    async fn delete_endpoint(&self, id: &str) -> Result<(), Error>;

    /// Makes `secret` the current one; the current one keeps signing until `previous_until`.
    async fn rotate_secret(
        &self,
        id: &str,
        secret: String,
        previous_until: UnixMicros,
        now: UnixMicros,
    ) -> Result<(), Error>;

    /// Up to `limit` attempts of an endpoint with a log position below `before`, newest first.
    async fn deliveries(
        &self,
        id: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, Error>;

    /// Sets the cursor (a replay), clearing failed attempts; the caller checked retention.
    async fn set_cursor(
        &self,
        id: &str,
        cursor: u64,
        now: UnixMicros,
    ) -> Result<EndpointRow, Error>;

    /// Moves the cursor from `expected` to `through` over events not delivered to this endpoint
    /// (filtered by type). `Ok(false)` when the cursor or the lease moved meanwhile.
    async fn skip_through(
        &self,
        id: &str,
        owner: &str,
        expected: u64,
        through: u64,
    ) -> Result<bool, Error>;

    /// Records an attempt and moves the endpoint with it, in one transaction; `Ok(false)` (and
    /// nothing recorded) when the cursor or the lease moved meanwhile.
    async fn record_attempt(&self, owner: &str, record: AttemptRecord) -> Result<bool, Error>;

    /// The enabled endpoints `owner` may deliver now: it takes those nobody holds (or whose
    /// lease expired) and renews its own, each for `lease`.
    async fn claim_endpoints(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<EndpointRow>, Error>;
}

/// Event types a receiver can ask for.
pub const EVENT_TYPES: [&str; 2] = ["order.created", "order.status_changed"];

/// Column list and decoding of the event types column (a JSON array of strings).
pub(crate) fn encode_event_types(types: &[String]) -> String {
    serde_json::to_string(types).expect("a list of strings encodes")
}

/// See [`encode_event_types`].
pub(crate) fn decode_event_types(text: &str) -> Result<Vec<String>, Error> {
    serde_json::from_str(text).map_err(|error| {
        Error::internal(format!("stored webhook event types do not decode: {error}"))
    })
}
