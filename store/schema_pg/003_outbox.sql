-- The transactional outbox (CONTRACT §2), the PostgreSQL twin of
-- store/schema/003_outbox.sql: every change event is written in the
-- transaction of its change and deleted once the bus confirmed it. Times are
-- epoch milliseconds by the server's clock (clock_timestamp(): the moment of
-- the insert, not of the transaction's start), so every process sharing the
-- database measures ages and leases on one clock.
--
-- seq comes from a sequence when the row is inserted, not when it commits.
-- The writers make it commit order per topology: each locks its topology's
-- row before inserting its event (store_pg_mutation.c). An identity column
-- never hands out a value twice.
CREATE TABLE outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topology_id text NOT NULL,
    topic text NOT NULL,
    msg_id text NOT NULL,
    envelope text NOT NULL,
    created_at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
);

-- Rows the bus can never accept, moved out of the way with the reason.
CREATE TABLE outbox_set_aside (
    seq bigint PRIMARY KEY,
    topology_id text NOT NULL,
    topic text NOT NULL,
    msg_id text NOT NULL,
    envelope text NOT NULL,
    created_at bigint NOT NULL,
    reason text NOT NULL,
    set_aside_at bigint NOT NULL
);

-- The one relay allowed to publish: a single row, taken when free or expired.
CREATE TABLE outbox_lease (
    id integer PRIMARY KEY CHECK (id = 1),
    holder text NOT NULL,
    expires_at bigint NOT NULL
);
