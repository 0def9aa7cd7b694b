//! The PostgreSQL schema and its migrations, applied at start. Several replicas may start at
//! once: each migrates inside one transaction holding a transaction-level advisory lock, so one
//! applies the missing versions and the others then find nothing left to do.

use super::rows::{into_error, pool_error};
use crate::domain::Error;
use deadpool_postgres::Pool;

/// The advisory lock key of migrations ("orders-m" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f72_6465_7273_2d6d;

/// The migrations in order; version N is `MIGRATIONS[N - 1]`. Never edit one that shipped: add
/// the next.
const MIGRATIONS: &[&str] = &[
    // Version 1: the tables of the SQLite schema, plus the log head.
    r#"
    -- seq gives creation order (listing and page tokens); order_id is the public id.
    CREATE TABLE orders (
        seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        order_id     text    NOT NULL UNIQUE,
        customer_id  text    NOT NULL,
        currency     text    NOT NULL,
        items        text    NOT NULL,   -- stored line items (store::record)
        total_cents  bigint  NOT NULL,
        status       integer NOT NULL,   -- orders.v1.OrderStatus number
        version      bigint  NOT NULL,
        create_time  bigint  NOT NULL,   -- microseconds since the Unix epoch
        update_time  bigint  NOT NULL
    );
    CREATE INDEX orders_by_customer ON orders (customer_id, seq);
    CREATE INDEX orders_by_status ON orders (status, seq);

    -- The event log. A sequence is given by event_log_head in commit order, never reused.
    CREATE TABLE order_events (
        sequence         bigint  PRIMARY KEY,
        order_id         text    NOT NULL,
        previous_status  integer NOT NULL,  -- 0 for the creation
        event_time       bigint  NOT NULL,
        reason           text    NOT NULL,
        snapshot         text    NOT NULL   -- stored order right after the change (store::record)
    );
    CREATE INDEX order_events_by_order ON order_events (order_id, sequence);

    -- The last sequence given out. Updated as the last write of every transaction that appends
    -- events: its row lock, held through COMMIT, hands out sequences in commit order.
    CREATE TABLE event_log_head (
        one   boolean PRIMARY KEY DEFAULT true CHECK (one),
        last  bigint  NOT NULL
    );
    INSERT INTO event_log_head (one, last) VALUES (true, 0);

    -- Idempotency records, scoped to the calling principal; response is the first call's
    -- order (NULL only inside the transaction that claims the key).
    CREATE TABLE idempotency_keys (
        principal    text   NOT NULL,
        request_id   text   NOT NULL,
        fingerprint  bytea  NOT NULL,
        response     text,
        created_at   bigint NOT NULL,
        PRIMARY KEY (principal, request_id)
    );
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

    -- Facts about the store, e.g. up to which sequence events were pruned.
    CREATE TABLE store_meta (
        name   text   PRIMARY KEY,
        value  bigint NOT NULL
    );
    INSERT INTO store_meta (name, value) VALUES ('events_pruned_through', 0);
    "#,
    // Version 2: webhooks, and the writer's trace context kept with each event.
    r#"
    ALTER TABLE order_events ADD COLUMN trace_parent text;  -- W3C traceparent, NULL when untraced

    -- Endpoints. seq gives creation order (listing and page tokens).
    CREATE TABLE webhook_endpoints (
        seq                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        endpoint_id            text    NOT NULL UNIQUE,
        url                    text    NOT NULL,
        enabled                boolean NOT NULL,
        event_types            text    NOT NULL,   -- JSON array of strings; [] = all
        description            text    NOT NULL,
        disabled_reason        text    NOT NULL DEFAULT '',
        cursor                 bigint  NOT NULL,   -- delivered_through_sequence
        create_time            bigint  NOT NULL,   -- microseconds since the Unix epoch
        update_time            bigint  NOT NULL,
        secret                 text    NOT NULL,   -- sealed (see webhooks::secrets)
        previous_secret        text,
        previous_secret_until  bigint,
        failed_attempts        integer NOT NULL DEFAULT 0,  -- of the event after the cursor
        next_attempt           bigint,
        lease_owner            text,               -- the replica delivering it
        lease_expires          timestamptz         -- by the database's clock
    );

    -- The delivery log: every attempt.
    CREATE TABLE webhook_deliveries (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        endpoint_id     text    NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
        webhook_id      text    NOT NULL,
        sequence        bigint  NOT NULL,
        attempt         integer NOT NULL,
        attempt_time    bigint  NOT NULL,
        http_status     integer NOT NULL,
        error           text    NOT NULL,
        latency_micros  bigint  NOT NULL,
        next_attempt    bigint,
        delivered       boolean NOT NULL
    );
    CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
    CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (attempt_time);

    -- Idempotency of CreateWebhookEndpoint, per principal.
    CREATE TABLE webhook_idempotency_keys (
        principal    text   NOT NULL,
        request_id   text   NOT NULL,
        fingerprint  bytea  NOT NULL,
        endpoint_id  text   NOT NULL,
        created_at   bigint NOT NULL,
        PRIMARY KEY (principal, request_id)
    );
    CREATE INDEX webhook_idempotency_keys_by_age ON webhook_idempotency_keys (created_at);
    "#,
];

/// Brings the schema to the newest version, waiting for a replica that is doing the same.
pub(super) async fn migrate(pool: &Pool) -> Result<(), Error> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(into_error)?;
    // Another replica may hold the lock for as long as its migration takes.
    tx.batch_execute("SET LOCAL statement_timeout = '5min'")
        .await
        .map_err(into_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(into_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS order_service_schema (
             version     integer PRIMARY KEY,
             applied_at  timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(into_error)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM order_service_schema",
            &[],
        )
        .await
        .map_err(into_error)?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(Error::internal(format!(
            "the database's schema is version {current}, newer than this build knows \
             ({known}): run a newer order-service"
        )));
    }
    for version in current + 1..=known {
        tx.batch_execute(MIGRATIONS[(version - 1) as usize])
            .await
            .map_err(into_error)?;
        tx.execute(
            "INSERT INTO order_service_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(into_error)?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(into_error)
}
