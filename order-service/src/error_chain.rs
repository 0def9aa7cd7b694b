//! Showing an error with its causes on one line (`outer: inner: innermost`), for logs. One
//! definition for both binaries, in the telemetry crate; re-exported here under the name the
//! order-service code uses.

pub use order_status_telemetry::DisplayChain;
