-- Claims that name their holder and carry a fencing token, for mutations and
-- for deploys and teardowns (DESIGN "The store", tb/store.h "Claims"); the
-- version a mutation was enqueued against; and the indexes recovery, a
-- restarted worker and retention pruning read. Times are epoch milliseconds.
--
-- mutations: claimed_by is the holder's worker id and claim_token its fencing
-- token (finishing a claim needs both); effect_started_at is when the holder
-- said its side effect (the apply hook) began: a claim lost after that is
-- never run again. Both stay on a settled row, as a record of who finished
-- it. expected_version is the version the mutation may apply to (NULL: any).
ALTER TABLE mutations ADD COLUMN claimed_by TEXT;
ALTER TABLE mutations ADD COLUMN claim_token INTEGER;
ALTER TABLE mutations ADD COLUMN effect_started_at INTEGER;
ALTER TABLE mutations ADD COLUMN expected_version INTEGER;

-- topologies: claim_seq is the last fencing token handed out for the topology
-- (each claim of it, mutation, deploy or teardown, takes the next one). The
-- other columns are the claim of its deploy or teardown, as above;
-- claim_attempts counts the claims of the current transition lost without a
-- word from their worker.
ALTER TABLE topologies ADD COLUMN claim_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE topologies ADD COLUMN claim_kind TEXT CHECK (claim_kind IN ('deploy', 'teardown'));
ALTER TABLE topologies ADD COLUMN claimed_by TEXT;
ALTER TABLE topologies ADD COLUMN claim_token INTEGER;
ALTER TABLE topologies ADD COLUMN claimed_at INTEGER;
ALTER TABLE topologies ADD COLUMN effect_started_at INTEGER;
ALTER TABLE topologies ADD COLUMN claim_attempts INTEGER NOT NULL DEFAULT 0;

-- A restarted worker looks up its own claims; recovery looks up old transition
-- claims; retention prunes settled rows by age. All partial: they hold only
-- the rows those reads want.
CREATE INDEX mutations_claimed_by ON mutations (claimed_by) WHERE state = 'applying';
CREATE INDEX topologies_claimed ON topologies (claimed_at) WHERE claimed_by IS NOT NULL;
CREATE INDEX mutations_settled ON mutations (updated_at) WHERE state IN ('applied', 'failed');
