//! Webhooks from the client side: managing endpoints over `orders.v1.WebhookService` (the
//! `Client` methods `create_webhook_endpoint`, …), verifying deliveries in a service's own
//! handler ([`Verifier`], [`verify_request`]) and the development receiver behind
//! `status-client webhooks listen` ([`listen`](listen::listen)).
//!
//! The signing scheme is Standard Webhooks 1.0, implemented once in the `order-status-webhooks`
//! crate (shared with order-service, which signs) and re-exported here, so a service needs only
//! status-client.
//!
//! Verifying in an axum handler (the README's example):
//!
//! ```no_run
//! use axum::{body::Bytes, extract::State, http::{HeaderMap, StatusCode}};
//! use status_client::webhooks::Verifier;
//!
//! async fn order_webhook(
//!     State(verifier): State<Verifier>,
//!     headers: HeaderMap,
//!     body: Bytes,
//! ) -> (StatusCode, String) {
//!     match verifier.verify(&headers, &body) {
//!         Err(why) => (StatusCode::UNAUTHORIZED, format!("{why}\n")),
//!         Ok(delivery) => {
//!             let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
//!             tracing::info!(id = %delivery.webhook_id, r#type = %event["type"], "order event");
//!             (StatusCode::NO_CONTENT, String::new())
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::new(vec![std::env::var("WEBHOOK_SECRET")?.parse()?]);
//! let app: axum::Router = axum::Router::new()
//!     .route("/hooks/orders", axum::routing::post(order_webhook))
//!     .with_state(verifier);
//! # drop(app);
//! # Ok(()) }
//! ```

mod calls;
mod dedupe;
pub mod listen;
mod verify;

pub use order_status_webhooks::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Secret, SecretError,
    VerifyError, WebhookHeaders, sign, unix_now, verify,
};
pub use verify::{VerifiedDelivery, Verifier, verify_request};
