-- Idempotency-Key records (CONTRACT §4): one row per (user, key). A request
-- reserves its key before it changes anything (status NULL: in flight, until
-- lease_until) and then records its answer (status, response). Rows are
-- forgotten TTL after created_at (24 h) and pruned in small batches.
-- `sub` is the user (the token's `sub` claim); request_hash is the hex
-- SHA-256 of the request; token is the reservation's fencing token: only
-- its holder may record the answer. Times are epoch milliseconds.
CREATE TABLE idempotency (
    sub TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    token TEXT NOT NULL,
    status INTEGER,
    response TEXT,
    created_at INTEGER NOT NULL,
    lease_until INTEGER,
    PRIMARY KEY (sub, key)
) STRICT, WITHOUT ROWID;

-- Pruning takes the oldest rows first.
CREATE INDEX idempotency_created ON idempotency (created_at);
