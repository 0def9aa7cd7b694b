//! order-service's integration tests, one binary (one link, one process per run): each module
//! starts real servers on port 0 with their own temporary SQLite files (postgres: databases of
//! their own on the server scripts/with-postgres.sh starts).

mod api;
mod edge;
mod fuzz_regressions;
mod lifecycle;
mod metrics;
mod postgres;
mod rate_limit;
mod storage;
mod support;
mod watch;
mod webhooks;
