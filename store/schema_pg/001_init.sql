-- Topologies and their mutation queue (CONTRACT §4), the PostgreSQL twin of
-- store/schema/001_init.sql: the same tables, columns and meanings. Times are
-- epoch milliseconds (bigint), so both backends format them identically.
-- Documents and payloads are text holding the compact JSON the store wrote:
-- jsonb would reorder object keys and drop duplicates, and the store hands
-- back exactly what it was given, byte for byte, on every backend.
CREATE TABLE topologies (
    id text PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'deploying', 'active', 'degraded',
                                           'failed', 'tearing_down', 'torn_down')),
    version bigint NOT NULL CHECK (version >= 0),
    doc text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);

-- seq is the internal, monotonically increasing key behind "oldest first".
-- An identity column never hands out a value twice.
CREATE TABLE mutations (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    topology_id text NOT NULL REFERENCES topologies (id) ON DELETE CASCADE,
    op text NOT NULL,
    payload text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'applying', 'applied', 'failed')),
    error text,
    attempts integer NOT NULL DEFAULT 0,
    claimed_at bigint,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);

-- Listing, in-flight reads and the claim all look up (topology, state) in seq order.
CREATE INDEX mutations_topology_state ON mutations (topology_id, state, seq);
