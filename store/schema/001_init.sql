-- Topologies and their mutation queue (CONTRACT §4). Times are epoch
-- milliseconds; documents and payloads are compact JSON text.
CREATE TABLE topologies (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'deploying', 'active', 'degraded',
                                           'failed', 'tearing_down', 'torn_down')),
    version INTEGER NOT NULL CHECK (version >= 0),
    doc TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- seq is the internal, monotonically increasing key behind "oldest first";
-- AUTOINCREMENT guarantees a deleted row's key is never reused.
CREATE TABLE mutations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topology_id TEXT NOT NULL REFERENCES topologies (id) ON DELETE CASCADE,
    op TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'applying', 'applied', 'failed')),
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Listing, in-flight reads and the claim all look up (topology, state) in seq order.
CREATE INDEX mutations_topology_state ON mutations (topology_id, state, seq);
