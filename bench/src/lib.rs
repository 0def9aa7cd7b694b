//! Load benchmark of `order-service` against baselines measured in the same run: a bare tonic
//! server answering the same `orders.v1` proto with canned responses (for GetOrder), and an
//! SQLite file committing one single-row transaction per fsync (for durable CreateOrder).
//!
//! The `bench` binary drives everything; `bare-server` is the tonic baseline it starts.

pub mod bare;
pub mod canned;
pub mod cpu;
pub mod fsync_baseline;
pub mod load;
pub mod processes;
pub mod report;
pub mod tokens;
