//! order-service's integration tests, one binary (one link, one process per run): each module
//! starts real servers on port 0 with their own temporary SQLite files.

mod api;
mod lifecycle;
mod metrics;
mod storage;
mod support;
mod watch;
