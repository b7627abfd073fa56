// The SSE stream over real NATS (CONTRACT §3.5–§3.7 and Resume): a bus that
// is down at start or dies mid-stream, coming back without the client
// reconnecting; JetStream resume across a gateway restart with the npm
// eventsource client; slow-consumer drops becoming a resync; an internal
// failure of one stream. nats-server and the gateway are killed and
// restarted by PID. Usage: node sse_nats.js <path to topobus>
'use strict';
const path = require('path');
const { execFileSync } = require('child_process');
const { EventSource } = require('eventsource');
const { connect, StringCodec } = require('nats');
const h = require('./lib/harness');
const { check, request, Stream, waitFor, within } = h;

const topobus = process.argv[2];
const nats = new h.Nats(true);
let gw;

// (Re)starts the gateway on the same port and database, as a restarted service would be.
async function start(extraEnv = {}) {
  const previous = gw;
  gw = new h.Gateway(topobus, { bus: nats.url, keepalive: 1, env: extraEnv, dir: previous && previous.dir });
  if (previous) gw.port = previous.port;
  await gw.start();
  gw.editor = gw.token('ed', 'editor,viewer');
}

async function createTopology(name) {
  const r = await request(gw.base, 'POST', '/topologies', { token: gw.editor, body: { name } });
  check(r.status === 201, `create ${r.status} ${r.body}`);
  return r.json.id;
}

async function pub(topic, payload) {
  const p = h.run(topobus, ['pub', topic, JSON.stringify(payload), '--bus', nats.url]);
  const r = await within(p.exited, 10000, 'topobus pub');
  check(r.code === 0, `topobus pub exit ${r.code}: ${r.stderr}`);
}

async function open(id) {
  const s = new Stream(gw.base, `/topologies/${id}/events?token=${gw.editor}`);
  await within(s.ready, 5000, 'stream open');
  check(s.status === 200, `stream status ${s.status}`);
  await waitFor(() => s.events('snapshot').length >= 1, 5000, 'first snapshot');
  return s;
}

// Publishes until the stream shows it (the subscription may still be on its way to the server).
async function pubUntilSeen(s, id, name) {
  await waitFor(async () => {
    await pub(`topology.${id}.${name}`, { probe: name });
    await new Promise((r) => setTimeout(r, 100));
    return s.events(name).length > 0;
  }, 10000, `live ${name} event`);
}

async function busDownAtStartComesUp() {
  await start();
  const id = await createTopology('late-bus');
  const s = await open(id);
  check(s.events('snapshot')[0].json.bus === 'down', `snapshot says down: ${s.events('snapshot')[0].text}`);
  const ka = s.comments.length;
  await waitFor(() => s.comments.length >= ka + 1, 3000, 'keepalives while the bus is down');
  await nats.start();
  await waitFor(() => s.events('bus').some((f) => f.json.state === 'up'), 10000, 'bus up on the open stream');
  await waitFor(() => s.events('snapshot').length >= 2, 5000, 'fresh snapshot after bus up');
  const order = s.frames.map((f) => f.event);
  check(order.indexOf('bus') < order.lastIndexOf('snapshot'), `bus up before the fresh snapshot: ${order}`);
  check(s.events('snapshot').at(-1).json.bus === 'up', 'fresh snapshot says up');
  await pubUntilSeen(s, id, 'after-up');
  check(!s.closed, 'the client never reconnected');
  s.close();
}

async function busDiesMidStream() {
  const id = await createTopology('outage');
  const s = await open(id);
  await pubUntilSeen(s, id, 'before');
  await nats.kill('SIGKILL');
  await waitFor(() => s.events('bus').some((f) => f.json.state === 'down'), 5000, 'bus down notice');
  const ka = s.comments.length;
  await waitFor(() => s.comments.length >= ka + 2, 4000, 'keepalives while down');
  const snapshots = s.events('snapshot').length;
  await nats.start();
  await waitFor(() => s.events('bus').filter((f) => f.json.state === 'up').length >= 1, 10000, 'bus up again');
  await waitFor(() => s.events('snapshot').length > snapshots, 5000, 'resync snapshot after the outage');
  await pubUntilSeen(s, id, 'after');
  check(!s.closed && s.status === 200, 'same connection throughout');
  s.close();
}

// The gateway restarts; the eventsource client reconnects by itself with Last-Event-ID, and
// JetStream replays what it missed (no snapshot).
async function jetstreamResumeAcrossRestart() {
  const id = await createTopology('resume');
  const seen = [];
  const es = new EventSource(`${gw.base}/topologies/${id}/events?token=${gw.editor}`);
  for (const name of ['snapshot', 'step']) es.addEventListener(name, (e) => seen.push({ name, id: e.lastEventId, data: JSON.parse(e.data) }));
  try {
    await waitFor(() => seen.length === 1, 5000, 'snapshot');
    await waitFor(async () => {
      // A change event first: from it on, cursors carry the version the client reached (0),
      // without which a resume cannot prove continuity and gets a snapshot.
      await pub(`topology.${id}.status`, { state: 'pending', previous: 'pending', version: 0 });
      await pub(`topology.${id}.step`, { i: 0 });
      await new Promise((r) => setTimeout(r, 100));
      return seen.some((e) => e.name === 'step' && /^[0-9a-f]{16}-\d+-0$/.test(e.id));
    }, 10000, 'a live step with a versioned cursor');
    const r = await gw.stop();
    check(r.code === 0, `gateway exit ${r.code}`);
    for (const i of [1, 2, 3]) await pub(`topology.${id}.step`, { i });
    await start();
    await waitFor(() => seen.filter((e) => e.name === 'step' && e.data.payload.i > 0).length === 3, 15000,
      'missed events replayed after reconnect');
    check(seen.filter((e) => e.name === 'snapshot').length === 1, `no second snapshot: ${seen.map((e) => e.name)}`);
    const is = seen.filter((e) => e.name === 'step').map((e) => e.data.payload.i);
    check(is.slice(-3).join() === '1,2,3', `replayed in order: ${is}`);
  } finally {
    es.close();
  }
}

async function slowConsumerDropsResync() {
  await gw.stop();
  await start({ TOPOBUS_NATS_PENDING_MSGS: '1' });
  const id = await createTopology('burst');
  const s = await open(id);
  await pubUntilSeen(s, id, 'ready');
  const nc = await connect({ servers: nats.url });
  const sc = StringCodec();
  const before = s.events('snapshot').length;
  for (let round = 0; round < 20 && s.events('snapshot').length === before; round++) {
    for (let i = 0; i < 5000; i++) nc.publish(`topology.${id}.burst`, sc.encode(JSON.stringify({ payload: { i } })));
    await nc.flush();
    await new Promise((r) => setTimeout(r, 100));
  }
  await nc.close();
  await waitFor(() => s.events('snapshot').length > before, 5000, 'a resync snapshot after dropped events');
  await pubUntilSeen(s, id, 'after-burst');
  s.close();
  await gw.stop();
  await start();
}

async function internalFailureClosesOneStream() {
  const doomed = await createTopology('doomed');
  const healthy = await createTopology('healthy');
  const a = await open(doomed);
  const b = await open(healthy);
  await pubUntilSeen(b, healthy, 'warm');
  // The topology vanishes under the stream (as if removed by hand); the next snapshot cannot be read.
  execFileSync(h.which('sqlite3'), [path.join(gw.dir, 'topobus.db'),
    `DELETE FROM mutations WHERE topology_id='${doomed}'; DELETE FROM topologies WHERE id='${doomed}';`]);
  await nats.kill('SIGKILL');
  await waitFor(() => a.events('bus').length && b.events('bus').length, 5000, 'bus down on both');
  await nats.start();
  await waitFor(() => a.closed, 10000, 'the failed stream is closed');
  const err = a.events('error');
  check(err.length === 1 && err[0].json.message === 'Stream interrupted', `error event: ${a.raw.slice(-200)}`);
  await waitFor(() => b.events('snapshot').length >= 2, 5000, 'the other stream resyncs');
  await pubUntilSeen(b, healthy, 'still-live');
  check(!b.closed, 'the other stream stays open');
  b.close();
}

async function main() {
  await nats.reserve();
  await h.runCases([
    ['bus down at start: keepalives, then bus up + snapshot + live on the same connection', busDownAtStartComesUp],
    ['NATS dies mid-stream: bus down, keepalives, then up + snapshot + live', busDiesMidStream],
    ['JetStream resume across a gateway restart with the eventsource client', jetstreamResumeAcrossRestart],
    ['slow-consumer drops become a resync snapshot', slowConsumerDropsResync],
    ['an internal failure closes one stream with event: error, others continue', internalFailureClosesOneStream],
  ], async () => {
    if (gw) { await gw.stop(); gw.cleanup(); }
    await nats.stop();
  });
}

main();
