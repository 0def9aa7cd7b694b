//! A fresh PostgreSQL database per test, on the server named by `ORDER_STATUS_TEST_POSTGRES`
//! (a superuser URL of its `postgres` database, as `scripts/with-postgres.sh` sets it): created
//! with a unique name, dropped `WITH (FORCE)` when the handle drops (best effort).
//!
//! Without that variable a PostgreSQL test fails, naming the script: it never passes silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable that names the test server.
pub const SERVER_VARIABLE: &str = "ORDER_STATUS_TEST_POSTGRES";

/// A database of its own for one test; dropped with the handle.
#[derive(Debug)]
pub struct PgDatabase {
    /// `postgresql://…/<name>`: the server's URL with this database's name.
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDatabase {
    /// Creates a database with a unique name. Panics (failing the test) when the server is not
    /// configured or refuses.
    pub async fn create() -> PgDatabase {
        let admin_url = std::env::var(SERVER_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{SERVER_VARIABLE} is not set: the PostgreSQL tests need a server. Run them \
                 through scripts/with-postgres.sh, e.g. `scripts/with-postgres.sh cargo test \
                 -p order-service --test it`, or set {SERVER_VARIABLE} to a superuser URL"
            )
        });
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "order_status_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|error| panic!("CREATE DATABASE {name} on {admin_url}: {error}"));
        let url = with_database(&admin_url, &name);
        PgDatabase {
            url,
            name,
            admin_url,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection of the test's own to this database (for checks a test makes itself).
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime (which cannot block on another future) or outside one:
        // a thread of its own with a runtime of its own works in both.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} was not dropped", self.name);
        }
    }
}

/// Connects to `url` (no TLS: the test server listens on a Unix socket), driving the
/// connection on a task of the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("test connection to PostgreSQL ended: {error}");
        }
    });
    client
}

/// `url` with its database (the path) replaced by `name`, keeping the query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |at| scheme_end + at);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[test]
fn the_database_name_replaces_the_path_only() {
    assert_eq!(
        with_database("postgresql://postgres@%2Ftmp%2Fpg.x/postgres", "t1"),
        "postgresql://postgres@%2Ftmp%2Fpg.x/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@localhost:5432?sslmode=disable", "t2"),
        "postgres://u:p@localhost:5432/t2?sslmode=disable"
    );
    assert_eq!(
        with_database("postgresql://localhost/postgres?host=%2Ftmp", "t3"),
        "postgresql://localhost/t3?host=%2Ftmp"
    );
}
