-- Version 2 of the order-service schema (SQLite): webhooks, and the writer's trace context kept
-- with each event so a delivery can link to the trace of the write.

ALTER TABLE order_events ADD COLUMN trace_parent TEXT;  -- W3C traceparent, NULL when untraced

-- Endpoints. seq gives creation order (listing and page tokens).
CREATE TABLE webhook_endpoints (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id            TEXT    NOT NULL UNIQUE,
    url                    TEXT    NOT NULL,
    enabled                INTEGER NOT NULL,
    event_types            TEXT    NOT NULL,   -- JSON array of strings; [] = all
    description            TEXT    NOT NULL,
    disabled_reason        TEXT    NOT NULL DEFAULT '',
    cursor                 INTEGER NOT NULL,   -- delivered_through_sequence
    create_time            INTEGER NOT NULL,   -- microseconds since the Unix epoch
    update_time            INTEGER NOT NULL,
    secret                 TEXT    NOT NULL,   -- sealed (see webhooks::secrets)
    previous_secret        TEXT,
    previous_secret_until  INTEGER,
    failed_attempts        INTEGER NOT NULL DEFAULT 0,  -- of the event after the cursor
    next_attempt           INTEGER,
    lease_owner            TEXT,               -- unused by one process; kept like PostgreSQL's
    lease_expires          INTEGER
);

-- The delivery log: every attempt, newest last.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     TEXT    NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    webhook_id      TEXT    NOT NULL,
    sequence        INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    attempt_time    INTEGER NOT NULL,
    http_status     INTEGER NOT NULL,
    error           TEXT    NOT NULL,
    latency_micros  INTEGER NOT NULL,
    next_attempt    INTEGER,
    delivered       INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (attempt_time);

-- Idempotency of CreateWebhookEndpoint, per principal.
CREATE TABLE webhook_idempotency_keys (
    principal    TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    fingerprint  BLOB    NOT NULL,
    endpoint_id  TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (principal, request_id)
) WITHOUT ROWID;
CREATE INDEX webhook_idempotency_keys_by_age ON webhook_idempotency_keys (created_at);
