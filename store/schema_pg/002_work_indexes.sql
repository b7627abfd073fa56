-- The mutator's scans across topologies: "which topologies have pending
-- work" and stale-claim recovery both select by state (and claim time),
-- which the (topology_id, state, seq) index cannot serve. Topology lists
-- are ordered by creation.
CREATE INDEX mutations_state_claimed ON mutations (state, claimed_at);
CREATE INDEX topologies_created ON topologies (created_at, id);
