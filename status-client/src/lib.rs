//! status-client: the client half of the order-status pair.
//!
//! - [`Client`]: what an internal service embeds to call order-service safely: load-balanced
//!   endpoints, bearer token, deadlines on every call, retries with backoff and a throttle,
//!   idempotency keys, and a watch that survives disconnects.
//! - [`cli`]: the `status-client` command line.
//! - [`serve`]: the long-running HTTP/JSON client service (`status-client serve`).
//! - [`webhooks`]: webhook endpoints over `orders.v1.WebhookService`, verifying deliveries in
//!   a service's own handler ([`webhooks::Verifier`]), and the `webhooks listen` receiver.
//!
//! ```no_run
//! use status_client::{CallOptions, Client, Settings};
//! use status_client::proto::{CreateOrderRequest, LineItem};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::from_endpoint_list("http://127.0.0.1:50051")?
//!     .with_token("my-token")
//!     .with_timeout(std::time::Duration::from_secs(2));
//! let client = Client::new(settings)?;
//! let order = client
//!     .create_order(
//!         CreateOrderRequest {
//!             customer_id: "c-1".into(),
//!             currency: "EUR".into(),
//!             items: vec![LineItem { sku: "BOOK".into(), quantity: 2, unit_price_cents: 1250 }],
//!             ..Default::default()
//!         },
//!         CallOptions::new(),
//!     )
//!     .await?;
//! println!("created {} ({})", order.order_id, order.total_cents);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod auth;
mod channel;
pub mod cli;
mod client;
pub mod error;
mod idempotency;
mod order_status;
mod pages;
pub mod retry;
pub mod serve;
pub mod settings;
pub mod watch;
pub mod webhooks;

pub use auth::AuthInterceptor;
pub use client::{CallOptions, CallStats, Client};
pub use error::ClientError;
pub use idempotency::new_request_id;
pub use order_status::{parse_order_status, short_name};
pub use settings::{ClientIdentity, EndpointUrl, Settings, SettingsError};
pub use watch::OrderEventStream;

/// The `orders.v1` messages, re-exported so that users need no direct dependency.
pub use orders_proto::v1 as proto;
