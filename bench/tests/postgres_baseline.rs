//! pg-bench's PostgreSQL parts on a real server (ORDER_STATUS_TEST_POSTGRES; `scripts/with-postgres.sh
//! cargo test -p order-status-bench` starts a throwaway one): the run's own database is made and
//! dropped, and the commit baseline counts only commits that are rows in the table. Without the
//! variable the test fails, naming the script, rather than pass without testing anything.

use order_status_bench::postgres::{self, BenchDatabase, SERVER_URL_VARIABLE, ServerFacts};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_counts_committed_rows_in_a_database_that_is_dropped_after() {
    let server_url = std::env::var(SERVER_URL_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{SERVER_URL_VARIABLE} is not set: run with a server, e.g. \
             `scripts/with-postgres.sh cargo test -p order-status-bench`"
        )
    });
    let admin = postgres::connect(&server_url, "the server").await.unwrap();
    let facts = ServerFacts::read(&admin).await.unwrap();
    assert!(!facts.version.is_empty());
    let name = format!("bench_test_{}", std::process::id());
    let database = BenchDatabase::create(admin, &server_url, &name)
        .await
        .unwrap();

    let clients = postgres::connect_many(&database.url, 3).await.unwrap();
    postgres::create_baseline_table(&clients[0]).await.unwrap();
    let rate = postgres::single_row_commits(
        &clients,
        "test",
        Duration::from_millis(50),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(rate.commits > 0, "no commit in the window");
    // The server counts its WAL flushes (zero when fsync is off, as for tests).
    assert!(postgres::wal_flushes(&clients[0]).await.is_some());
    let rows: i64 = clients[0]
        .query_one("SELECT count(*) FROM commit_baseline", &[])
        .await
        .unwrap()
        .get(0);
    // The warm-up's commits are rows too, but not counted.
    assert!(
        u64::try_from(rows).unwrap() >= rate.commits,
        "{rows} rows, {} commits counted",
        rate.commits
    );
    let clients_seen: i64 = clients[0]
        .query_one(
            "SELECT count(DISTINCT split_part(order_id, '-', 2)) FROM commit_baseline",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(clients_seen, 3, "every client committed");

    // Still connected: dropping forces them out.
    database.drop_database().await.unwrap();
    let check = postgres::connect(&server_url, "the server").await.unwrap();
    let left: i64 = check
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "database {name} was not dropped");
    drop(clients);
}
