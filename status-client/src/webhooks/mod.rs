//! Webhooks from the client side: managing endpoints over `orders.v1.WebhookService` (the
//! `Client` methods `create_webhook_endpoint`, …), verifying deliveries in a service's own
//! handler ([`Verifier`], [`verify_request`]) and the development receiver behind
//! `status-client webhooks listen` ([`listen`](listen::listen)).
//!
//! The signing scheme is Standard Webhooks 1.0, implemented once in the `order-status-webhooks`
//! crate (shared with order-service, which signs) and re-exported here, so a service needs only
//! status-client.

mod calls;
mod dedupe;
pub mod listen;
mod verify;

pub use order_status_webhooks::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Secret, SecretError,
    VerifyError, WebhookHeaders, sign, unix_now, verify,
};
pub use verify::{VerifiedDelivery, Verifier, verify_request};
