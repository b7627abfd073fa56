-- The transactional outbox (CONTRACT §2): every change event is written in
-- the transaction of its change and deleted once the bus confirmed it.
-- seq is commit order (SQLite has one writer at a time); AUTOINCREMENT never
-- reuses a deleted row's key. Times are epoch milliseconds.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topology_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- Rows the bus can never accept, moved out of the way with the reason.
CREATE TABLE outbox_set_aside (
    seq INTEGER PRIMARY KEY NOT NULL,
    topology_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    set_aside_at INTEGER NOT NULL
) STRICT;

-- The one relay allowed to publish: a single row, taken when free or expired.
CREATE TABLE outbox_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
