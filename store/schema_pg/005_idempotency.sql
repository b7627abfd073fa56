-- Idempotency-Key records (CONTRACT §4), the PostgreSQL twin of
-- store/schema/005_idempotency.sql: one row per (user, key). A request
-- reserves its key before it changes anything (status NULL: in flight, until
-- lease_until) and then records its answer (status, response), for a change
-- in the change's own transaction. Rows are forgotten TTL after created_at
-- (24 h) and pruned in small batches. `sub` is the user (the token's `sub`
-- claim; `user` is a reserved word here); token is the reservation's fencing
-- token. Times are epoch milliseconds by the server's clock, so every
-- gateway sharing the database agrees on leases and expiry.
CREATE TABLE idempotency (
    sub text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    token text NOT NULL,
    status integer,
    response text,
    created_at bigint NOT NULL,
    lease_until bigint,
    PRIMARY KEY (sub, key)
);

-- Pruning takes the oldest rows first.
CREATE INDEX idempotency_created ON idempotency (created_at);
