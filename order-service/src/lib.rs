//! order-service: the system of record for orders and their status, served over gRPC
//! (`orders.v1.OrderService`) with token auth, deadlines, health and reflection, over plaintext
//! HTTP/2 or TLS (optionally mutual).
//!
//! The binary is a thin wrapper around [`startup::Application`]; tests build the same
//! application on port 0.

pub mod config;
pub mod domain;
pub mod error_chain;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod health;
pub mod healthcheck;
pub mod observability;
pub mod runtime;
pub mod server;
pub mod startup;
pub mod store;
pub mod webhooks;
