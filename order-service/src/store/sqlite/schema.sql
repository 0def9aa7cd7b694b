-- Version 1 of the order-service schema (SQLite).

-- seq gives creation order (listing and page tokens); order_id is the public id.
CREATE TABLE orders (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id     TEXT    NOT NULL UNIQUE,
    customer_id  TEXT    NOT NULL,
    currency     TEXT    NOT NULL,
    items        TEXT    NOT NULL,   -- JSON array of line items
    total_cents  INTEGER NOT NULL,
    status       INTEGER NOT NULL,   -- orders.v1.OrderStatus number
    version      INTEGER NOT NULL,
    create_time  INTEGER NOT NULL,   -- microseconds since the Unix epoch
    update_time  INTEGER NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, seq);
CREATE INDEX orders_by_status ON orders (status, seq);

-- The event log. AUTOINCREMENT: a sequence is never reused, even after pruning.
CREATE TABLE order_events (
    sequence         INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id         TEXT    NOT NULL,
    previous_status  INTEGER NOT NULL,  -- 0 for the creation
    event_time       INTEGER NOT NULL,
    reason           TEXT    NOT NULL,
    snapshot         TEXT    NOT NULL   -- JSON of the order right after the change
);
CREATE INDEX order_events_by_order ON order_events (order_id, sequence);

-- Idempotency records, scoped to the calling principal; response is the first call's order.
CREATE TABLE idempotency_keys (
    principal    TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    fingerprint  BLOB    NOT NULL,
    response     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (principal, request_id)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Single-row facts about the store, e.g. up to which sequence events were pruned.
CREATE TABLE store_meta (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO store_meta (name, value) VALUES ('events_pruned_through', 0);
