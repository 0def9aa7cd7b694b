//! Standard Webhooks 1.0 signatures, shared by the sender (order-service) and receivers
//! (status-client's `webhooks listen`, and any service that calls [`verify`] itself).
//!
//! A delivery carries three headers: `webhook-id` (stable across retries of one event to one
//! endpoint), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, several space-separated entries while a
//! secret is being rotated). The key is the decoded bytes of a `whsec_<base64>` [`Secret`].
//!
//! ```
//! use order_status_webhooks::{sign, verify, Secret, WebhookHeaders, DEFAULT_TOLERANCE};
//!
//! let secret = Secret::generate();
//! let body = br#"{"type":"order.created"}"#;
//! let signature = sign(&[&secret], "evt_1", 1_700_000_000, body);
//! let headers = WebhookHeaders { id: "evt_1", timestamp: "1700000000", signature: &signature };
//! verify(&[&secret], &headers, body, 1_700_000_010, DEFAULT_TOLERANCE).unwrap();
//! ```
//!
//! Nothing here does I/O; the clock is a parameter (`now`), so callers and tests choose it.

mod secret;
mod signature;

pub use secret::{GENERATED_SECRET_BYTES, MIN_SECRET_BYTES, SECRET_PREFIX, Secret, SecretError};
pub use signature::{
    DEFAULT_TOLERANCE, VerifyError, WebhookHeaders, sign, signature_entry, unix_now, verify,
};

/// The header holding the delivery's id, the receiver's deduplication key.
pub const HEADER_ID: &str = "webhook-id";
/// The header holding the attempt's Unix time in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header holding the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
