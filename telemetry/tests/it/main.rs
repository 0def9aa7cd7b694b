//! The telemetry crate's integration tests that scope their subscriber to one test
//! (`set_default`), so they share one binary; `init.rs` installs process globals and has its own.

#[path = "../common/mod.rs"]
mod common;
mod export;
mod http;
mod logs;
mod metrics;
mod traces;
