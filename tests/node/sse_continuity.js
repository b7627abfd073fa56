// Continuity a stream can prove (CONTRACT §3 "Resume"), against `topobus
// gateway` on the in-process bus. The test publishes change events with their
// `version` field itself, as the store's outbox does, so it can lose one on
// purpose: a cursor carries the topology version the client reached; a resume
// replays only when the replay and the live tail continue that version, and
// otherwise (a lost version, an old cursor without a version) sends a
// snapshot; a live stream resyncs when a versioned event runs ahead of it.
// Usage: node sse_continuity.js <path to topobus>
'use strict';
const h = require('./lib/harness');
const { check, request, Stream, waitFor, within } = h;

const gw = new h.Gateway(process.argv[2], { keepalive: 1 });
let editor, viewer, publisher;
const CURSOR = /^[0-9a-f]{16}-\d+-(\d+)$/; // epoch, seq, version

async function createTopology(name) {
  const r = await request(gw.base, 'POST', '/topologies', { token: editor, body: { name } });
  check(r.status === 201, `create ${r.status} ${r.body}`);
  return r.json.id;
}

async function publish(topic, payload) {
  const r = await request(gw.base, 'POST', '/publish', { token: publisher, body: { topic, payload } });
  check(r.status === 202, `publish ${r.status} ${r.body}`);
}

const applied = (id, v) => publish(`topology.${id}.mutation.applied`, { mutation_id: `m${v}`, op: 'add_node', version: v });
const status = (id, v) => publish(`topology.${id}.status`, { state: 'active', previous: 'deploying', version: v });

async function gaps() {
  const r = await request(gw.base, 'GET', '/metrics');
  const m = /^topobus_sse_version_gaps_total (\d+)$/m.exec(r.body);
  check(m, 'the gap counter is exported');
  return +m[1];
}

async function open(id, lastEventId) {
  const headers = lastEventId === undefined ? {} : { 'last-event-id': lastEventId };
  const s = new Stream(gw.base, `/topologies/${id}/events?token=${viewer}`, headers);
  await within(s.ready, 5000, 'open a stream');
  check(s.status === 200, `stream status ${s.status}`);
  return s;
}

function versionOf(cursor) {
  const m = CURSOR.exec(cursor);
  check(m, `a three-part cursor: ${cursor}`);
  return +m[1];
}

const appliedVersions = (s) => s.events('mutation.applied').map((f) => f.json.payload.version).join();

// Publishes an unversioned marker and waits until s has it: everything the gateway sent
// s before it is in s.frames, so what is not there was not sent.
let markers = 0;
async function settle(id, s, what) {
  const n = ++markers;
  await publish(`topology.${id}.marker`, { n });
  await waitFor(() => s.events('marker').some((f) => f.json.payload.n === n), 5000, `marker after ${what}`);
}

// A stream that has seen versions 1..3 and then an unversioned event; returns that event's
// cursor (the version the client reached: 3) and closes the stream.
async function cursorAtVersion3(id) {
  const s = await open(id);
  await waitFor(() => s.events('snapshot').length === 1, 5000, 'snapshot');
  check(versionOf(s.events('snapshot')[0].id) === 0, `the snapshot's cursor carries its version: ${s.events('snapshot')[0].id}`);
  for (const v of [1, 2, 3]) await applied(id, v);
  await publish(`topology.${id}.step`, { i: 1 });
  await waitFor(() => s.events('step').length === 1, 5000, 'versions 1-3 and a step');
  check(appliedVersions(s) === '1,2,3', `applied ${appliedVersions(s)}`);
  check(s.events('mutation.applied').every((f) => versionOf(f.id) === f.json.payload.version),
    'an applied event\'s cursor carries its version');
  const cursor = s.events('step')[0].id;
  check(versionOf(cursor) === 3, `an unversioned event carries the version reached: ${cursor}`);
  check(s.events('snapshot').length === 1, 'no resync on the way');
  s.close();
  return cursor;
}

// (a) Cursor at 3, the bus then holds applied 4 and 5: replayed, no snapshot; live 6 continues.
async function resumeReplaysContinuingVersions() {
  const id = await createTopology('a');
  const cursor = await cursorAtVersion3(id);
  await applied(id, 4);
  await applied(id, 5);
  const r = await open(id, cursor);
  await waitFor(() => r.events('mutation.applied').length === 2, 5000, 'versions 4 and 5 replayed');
  check(appliedVersions(r) === '4,5', `replayed ${appliedVersions(r)}`);
  check(r.events('mutation.applied').map((f) => versionOf(f.id)).join() === '4,5', 'replayed cursors carry 4, 5');
  await applied(id, 6);
  await settle(id, r, 'live version 6');
  check(appliedVersions(r) === '4,5,6', `live ${appliedVersions(r)}`);
  check(r.events('snapshot').length === 0, `no snapshot: ${r.frames.map((f) => f.event)}`);
  r.close();
}

// (b) Cursor at 3, the bus holds applied 5 (4 was lost): snapshot, and 5 is not sent alone.
// The same when the replay holds another change event past the cursor's version.
async function resumeOverLostVersionSnapshots() {
  for (const [name, lose] of [['applied 5', (id) => applied(id, 5)], ['status at 4', (id) => status(id, 4)]]) {
    const id = await createTopology('b');
    const cursor = await cursorAtVersion3(id);
    await lose(id);
    const before = await gaps();
    const r = await open(id, cursor);
    await waitFor(() => r.events('snapshot').length === 1, 5000, `snapshot when the replay holds ${name}`);
    await settle(id, r, 'the snapshot');
    check(r.frames[0].event === 'snapshot', `the snapshot comes first: ${r.frames.map((f) => f.event)}`);
    check(r.events('mutation.applied').length === 0 && r.events('status').length === 0,
      `nothing past the gap is sent (${name}): ${r.frames.map((f) => f.event)}`);
    check(await gaps() === before + 1, `the gap is counted (${name})`);
    r.close();
  }
}

// (c) Cursor at 3, nothing after it: an empty replay; a live applied 5 then ends in a snapshot.
async function resumeThenLiveGapSnapshots() {
  const id = await createTopology('c');
  const cursor = await cursorAtVersion3(id);
  const r = await open(id, cursor);
  await settle(id, r, 'the empty replay');
  check(r.events('snapshot').length === 0, 'an empty replay needs no snapshot');
  const before = await gaps();
  await applied(id, 5);
  await waitFor(() => r.events('snapshot').length === 1, 5000, 'a snapshot when live version 5 follows 3');
  await settle(id, r, 'the resync');
  check(r.events('mutation.applied').length === 0, `version 5 is not sent alone: ${r.frames.map((f) => f.event)}`);
  check(await gaps() === before + 1, 'the gap is counted');
  r.close();
}

// (d) A two-part cursor (no version: an older gateway's, or stamped before any version was
// seen) gets a snapshot, though the bus could replay from it; its three-part twin replays.
async function oldCursorSnapshots() {
  const id = await createTopology('d');
  const cursor = await cursorAtVersion3(id);
  await applied(id, 4);
  const old = cursor.replace(/-\d+$/, '');
  check(/^[0-9a-f]{16}-\d+$/.test(old), `two-part cursor ${old}`);
  const r = await open(id, old);
  await waitFor(() => r.events('snapshot').length === 1, 5000, 'a snapshot for the two-part cursor');
  await settle(id, r, 'the snapshot');
  check(r.frames[0].event === 'snapshot' && r.events('mutation.applied').length === 0,
    `snapshot, no replay: ${r.frames.map((f) => f.event)}`);
  r.close();
  const twin = await open(id, cursor);
  await settle(id, twin, 'the replay');
  check(twin.events('snapshot').length === 0 && appliedVersions(twin) === '4', `the three-part cursor replays: ${twin.frames.map((f) => f.event)}`);
  twin.close();
}

async function liveAtVersion5(name) {
  const id = await createTopology(name);
  const s = await open(id);
  await waitFor(() => s.events('snapshot').length === 1, 5000, 'snapshot');
  for (const v of [1, 2, 3, 4, 5]) await applied(id, v);
  await waitFor(() => s.events('mutation.applied').length === 5, 5000, 'versions 1-5');
  return { id, s };
}

// (e) Live at 5: a status at version 7 means 6 and 7 were missed: snapshot. An applied 6
// continues, and so do change events at versions already reached.
async function liveChecks() {
  {
    const { id, s } = await liveAtVersion5('e1');
    const before = await gaps();
    await status(id, 7);
    await waitFor(() => s.events('snapshot').length === 2, 5000, 'a snapshot when status 7 follows 5');
    await settle(id, s, 'the resync');
    check(s.events('status').length === 0, `the status past the gap is not sent alone: ${s.frames.map((f) => f.event)}`);
    check(await gaps() === before + 1, 'the gap is counted');
    s.close();
  }
  {
    const { id, s } = await liveAtVersion5('e2');
    await status(id, 5);
    await applied(id, 6);
    await status(id, 6);
    await publish(`topology.${id}.mutation.enqueued`, { mutation_id: 'm7', op: 'add_node', payload: {}, version: 6 });
    await applied(id, 3); // a duplicate, forwarded: harmless
    await settle(id, s, 'versions 5 and 6');
    check(s.events('snapshot').length === 1, `no resync: ${s.frames.map((f) => f.event)}`);
    check(appliedVersions(s) === '1,2,3,4,5,6,3', `applied ${appliedVersions(s)}`);
    check(s.events('status').map((f) => versionOf(f.id)).join() === '5,6', 'status cursors carry 5, 6');
    check(versionOf(s.events('mutation.applied').at(-1).id) === 6, 'a duplicate does not lower the cursor');
    check(versionOf(s.events('marker').at(-1).id) === 6, 'the marker carries version 6');
    s.close();
  }
}

async function main() {
  await gw.start();
  editor = gw.token('ed', 'editor,viewer');
  viewer = gw.token('vi', 'viewer');
  publisher = gw.token('pu', 'publisher');
  await h.runCases([
    ['(a) resume at version 3, bus holds 4 and 5: replay without snapshot', resumeReplaysContinuingVersions],
    ['(b) resume at version 3, bus holds 5 or status 4 (4 lost): snapshot', resumeOverLostVersionSnapshots],
    ['(c) resume at version 3, empty replay, live applied 5: snapshot', resumeThenLiveGapSnapshots],
    ['(d) resume with a two-part cursor: snapshot', oldCursorSnapshots],
    ['(e) live at 5: status 7 resyncs, applied 6 continues', liveChecks],
    ['SIGTERM exits 0', async () => {
      const r = await gw.stop();
      check(r.code === 0, `exit ${r.code} ${r.signal}`);
    }],
  ], async () => { await gw.stop(); gw.cleanup(); });
}

main();
