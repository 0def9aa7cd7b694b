//! Load benchmark of `order-service` against baselines measured in the same run: a bare tonic
//! server answering the same `orders.v1` proto with canned responses (for GetOrder), and an
//! SQLite file committing one single-row transaction per fsync (for durable CreateOrder).
//!
//! The `bench` binary drives everything; `bare-server` is the tonic baseline it starts, and
//! [`collector`] the live OTLP collector it exports to with `--otlp-collector`.
//! `pg-bench` does the same for order-service on PostgreSQL (one and two replicas) against
//! PostgreSQL's own single-row commit rate, and measures cross-replica watch delivery.
//! `fanout-bench` measures the WatchOrders fan-out (many streams, paced creates) against the
//! same fan-out done the plain tonic way by `bare-server`.

pub mod bare;
pub mod canned;
pub mod collector;
pub mod cpu;
pub mod delivery;
pub mod fanout;
pub mod fsync_baseline;
pub mod load;
pub mod postgres;
pub mod processes;
pub mod report;
pub mod setup;
pub mod tokens;
