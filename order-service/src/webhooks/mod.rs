//! Webhooks (issue 10): endpoints that the service calls with every committed order event,
//! signed (Standard Webhooks 1.0), in sequence order per endpoint, at least once with a stable
//! `webhook-id`, retried on a schedule, from the same durable event log that feeds
//! `WatchOrders`. Each module has one job: which addresses may be reached ([`network`]), the
//! checked connector ([`connector`]) and HTTP attempt ([`client`]), the retry schedule
//! ([`schedule`]), the body and id ([`payload`]), secrets at rest ([`secrets`]) and the delivery
//! loop ([`dispatcher`]). Storage is [`crate::store::webhooks`]; the gRPC API is
//! [`crate::grpc::webhooks`].

pub mod client;
pub mod connector;
pub mod dispatcher;
pub mod network;
pub mod payload;
pub mod schedule;
pub mod secrets;

use std::time::Duration;

/// Webhook settings of a server.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Networks deliveries may reach although they are not public.
    pub allowed_networks: network::AllowedNetworks,
    /// Longest one attempt may take.
    pub attempt_timeout: Duration,
    /// Waits between attempts of one event.
    pub schedule: schedule::RetrySchedule,
    /// How long a replica's claim on an endpoint lasts without renewal (PostgreSQL).
    pub lease: Duration,
    /// How secrets are kept at rest.
    pub secrets: secrets::SecretBox,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allowed_networks: network::AllowedNetworks::default(),
            attempt_timeout: Duration::from_secs(10),
            schedule: schedule::RetrySchedule::default(),
            lease: Duration::from_secs(15),
            secrets: secrets::SecretBox::plain(),
        }
    }
}
