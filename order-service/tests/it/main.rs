//! order-service's integration tests, one binary (one link, one process per run): each module
//! starts real servers on port 0 with their own temporary database. `conformance` runs its
//! bodies on SQLite and on PostgreSQL, `replicas` runs several processes on one PostgreSQL
//! database, `postgres` tests the PostgreSQL store itself; these need `scripts/with-postgres.sh`
//! for their PostgreSQL tests.

mod api;
mod conformance;
mod edge;
mod fuzz_regressions;
mod lifecycle;
mod metrics;
mod postgres;
mod rate_limit;
mod replicas;
mod storage;
mod support;
mod webhooks;
