-- topobus:no-transaction
-- The PostgreSQL twin of store/schema/004_claims.sql: claims that name their
-- holder and carry a fencing token, for mutations and for deploys and
-- teardowns; the version a mutation was enqueued against; the indexes
-- recovery, a restarted worker and retention pruning read. The columns mean
-- what they mean there. claimed_at is written by the server's clock
-- (clock_timestamp()), so leases are judged on one clock.
--
-- This file runs outside a transaction (the marker on its first line), one
-- statement at a time, because CREATE INDEX CONCURRENTLY cannot run inside
-- one: on a large mutations table a plain CREATE INDEX would block every
-- enqueue and claim while it builds. So every statement can run again after
-- a failure part-way: columns are added IF NOT EXISTS (a cheap catalog
-- change: no rewrite, as their defaults are constants), and an index left
-- invalid by an interrupted build is dropped and built again. Statements
-- end with ';' at the end of a line; no function bodies here.
ALTER TABLE mutations ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE mutations ADD COLUMN IF NOT EXISTS claim_token bigint;
ALTER TABLE mutations ADD COLUMN IF NOT EXISTS effect_started_at bigint;
ALTER TABLE mutations ADD COLUMN IF NOT EXISTS expected_version bigint;

ALTER TABLE topologies ADD COLUMN IF NOT EXISTS claim_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE topologies ADD COLUMN IF NOT EXISTS claim_kind text
    CHECK (claim_kind IN ('deploy', 'teardown'));
ALTER TABLE topologies ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE topologies ADD COLUMN IF NOT EXISTS claim_token bigint;
ALTER TABLE topologies ADD COLUMN IF NOT EXISTS claimed_at bigint;
ALTER TABLE topologies ADD COLUMN IF NOT EXISTS effect_started_at bigint;
ALTER TABLE topologies ADD COLUMN IF NOT EXISTS claim_attempts integer NOT NULL DEFAULT 0;

DROP INDEX CONCURRENTLY IF EXISTS mutations_claimed_by;
CREATE INDEX CONCURRENTLY mutations_claimed_by ON mutations (claimed_by)
    WHERE state = 'applying';
DROP INDEX CONCURRENTLY IF EXISTS topologies_claimed;
CREATE INDEX CONCURRENTLY topologies_claimed ON topologies (claimed_at)
    WHERE claimed_by IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS mutations_settled;
CREATE INDEX CONCURRENTLY mutations_settled ON mutations (updated_at)
    WHERE state IN ('applied', 'failed');
