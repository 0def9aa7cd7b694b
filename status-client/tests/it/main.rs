//! status-client's integration tests, one binary: the library against scripted and TLS servers
//! on port 0, and what its telemetry records.

mod fuzz_regressions;
mod rate_limited;
mod scripted_server;
mod support;
mod telemetry;
mod tls;
mod unreachable;
mod webhooks_calls;
mod webhooks_listen;
