//! One conformance suite of store and service behaviour, run with the same test bodies on every
//! backend: each body takes a [`Backend`] and [`conformance!`] makes it two tests,
//! `<body>::sqlite` and `<body>::postgres` (`cargo test -p order-service --test it conformance`;
//! the PostgreSQL half through `scripts/with-postgres.sh`, and it fails without it).
//!
//! Everything goes through a real server on a real database; nothing here reaches into a
//! backend's internals (the SQLite-only tests, WAL, locks, full disks, stay in `storage.rs` and
//! `lifecycle.rs`).

use crate::support::Backend;

/// Instantiates each `async fn name(backend: Backend) { … }` as the tests `name::sqlite` and
/// `name::postgres`. A body marked `#[multi_thread]` runs on a multi-threaded runtime (two
/// workers) instead of the current thread. (Comment bodies with `//`: no doc attributes.)
macro_rules! conformance {
    ($(
        $(#[$flavor:ident])?
        async fn $name:ident($backend:ident: Backend $(,)?) $body:block
    )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($backend: $crate::support::Backend) $body

            conformance!(@test [$($flavor)?] sqlite Sqlite);
            conformance!(@test [$($flavor)?] postgres Postgres);
        }
    )*};
    (@test [] $test:ident $variant:ident) => {
        #[tokio::test]
        async fn $test() {
            body($crate::support::Backend::$variant).await
        }
    };
    (@test [multi_thread] $test:ident $variant:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            body($crate::support::Backend::$variant).await
        }
    };
}

mod orders;
mod watch;

/// Both backends are named by the suite (a compile-time check that the enum did not grow a
/// backend the macro does not instantiate).
#[allow(dead_code)]
fn every_backend_is_instantiated(backend: Backend) {
    match backend {
        Backend::Sqlite | Backend::Postgres => {}
    }
}
