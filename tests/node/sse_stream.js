// The SSE stream on the in-process bus (CONTRACT §3), against `topobus
// gateway` as a real process: auth order, wire format, snapshot, live events
// under derived names without leaks between topologies, keepalives,
// subscribe-before-snapshot, resume, the per-user cap and prompt cleanup.
// Usage: node sse_stream.js <path to topobus>
'use strict';
const { EventSource } = require('eventsource');
const h = require('./lib/harness');
const { check, request, Stream, waitFor, within } = h;

const gw = new h.Gateway(process.argv[2], { keepalive: 1 });
let editor, viewer, publisher;

async function createTopology(name) {
  const r = await request(gw.base, 'POST', '/topologies', { token: editor, body: { name } });
  check(r.status === 201, `create ${r.status} ${r.body}`);
  return r.json.id;
}

async function publish(topic, payload) {
  const r = await request(gw.base, 'POST', '/publish', { token: publisher, body: { topic, payload } });
  check(r.status === 202, `publish ${r.status} ${r.body}`);
}

async function metric(name) {
  const r = await request(gw.base, 'GET', '/metrics');
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(r.body);
  return m ? +m[1] : NaN;
}

async function open(path, headers) {
  const s = new Stream(gw.base, path, headers);
  await within(s.ready, 5000, `open ${path}`);
  return s;
}

async function authOrder() {
  const id = await createTopology('auth');
  const cases = [
    [`/topologies/${id}/events`, 401, {}],
    [`/topologies/${id}/events?token=garbage`, 401, {}],
    [`/topologies/a.b/events`, 401, {}], // no existence probe without a credential
    [`/topologies/${id}/events?token=${publisher}`, 403, {}],
    [`/topologies/t_unknown0000000000/events?token=${viewer}`, 404, {}],
    [`/topologies/a.b/events?token=${viewer}`, 404, {}],
    [`/topologies/*/events?token=${viewer}`, 404, {}],
    [`/topologies/%3E/events?token=${viewer}`, 404, {}],
    [`/topologies/a%2eb/events?token=${viewer}`, 404, {}],
    [`/topologies/%2e/events`, 404, { authorization: `Bearer ${viewer}` }], // lws folds it to /topologies/events
    [`/topologies/${'x'.repeat(65)}/events?token=${viewer}`, 404, {}],
  ];
  for (const [path, want, headers] of cases) {
    const r = await request(gw.base, 'GET', path, { headers });
    check(r.status === want, `${path.replace(/token=[^&]+/, 'token=…')}: ${r.status}, want ${want}`);
    check(r.json && typeof r.json.error === 'string', `error body for ${want}: ${r.body}`);
  }
  // Bearer works, and a ticket works exactly once.
  const s = await open(`/topologies/${id}/events`, { authorization: `Bearer ${viewer}` });
  check(s.status === 200, `bearer stream ${s.status}`);
  s.close();
  const t = await request(gw.base, 'POST', '/auth/sse-ticket', { token: viewer });
  check(t.status === 200 && /^[0-9a-f]{64}$/.test(t.json.ticket) && t.json.expires_in === 60, `ticket ${t.body}`);
  const s2 = await open(`/topologies/${id}/events?ticket=${t.json.ticket}`);
  check(s2.status === 200, `ticket stream ${s2.status}`);
  s2.close();
  const again = await request(gw.base, 'GET', `/topologies/${id}/events?ticket=${t.json.ticket}`);
  check(again.status === 401, `reused ticket ${again.status}`);
}

async function wireFormat() {
  const id = await createTopology('wire');
  for (const n of [1, 2]) {
    const r = await request(gw.base, 'POST', `/topologies/${id}/mutations`,
      { token: editor, body: { op: 'add_node', payload: { id: `n${n}`, kind: 'router' } } });
    check(r.status === 202, `enqueue ${r.status}`);
  }
  // curl sees the bytes as they are on the wire.
  const curl = h.run(h.which('curl'), ['-sN', '-D', '-', '--max-time', '2',
    `${gw.base}/topologies/${id}/events?token=${viewer}`]);
  const out = (await within(curl.exited, 10000, 'curl exit')).stdout;
  const [head, body] = out.split('\r\n\r\n');
  check(/^HTTP\/1\.1 200/.test(head), `status line: ${head.split('\r\n')[0]}`);
  check(/content-type: text\/event-stream/i.test(head), 'content-type');
  check(/cache-control: no-cache, no-transform/i.test(head), 'cache-control');
  check(/x-accel-buffering: no/i.test(head), 'x-accel-buffering');
  check(!/content-encoding/i.test(head), 'no compression');
  const m = /^retry: (\d+)\n\n: keepalive\n\n/.exec(body);
  check(m && +m[1] >= 2000 && +m[1] <= 5000, `retry then keepalive first: ${JSON.stringify(body.slice(0, 40))}`);
  const snap = /id: ([0-9a-f]{16}-\d+-0)\nevent: snapshot\ndata: (.*)\n\n/.exec(body);
  check(snap, 'snapshot frame with a cursor carrying its version');
  const data = JSON.parse(snap[2]);
  check(data.topology_id === id && data.status === 'pending' && data.version === 0 && data.bus === 'up',
    `snapshot fields ${snap[2]}`);
  check(data.in_flight.length === 2 && data.in_flight[0].payload.id === 'n1' &&
    data.in_flight[1].payload.id === 'n2' && data.in_flight.every((m) => m.state === 'pending'),
  'in_flight: pending rows, oldest first');
  // Retry values are drawn per stream.
  const retries = new Set();
  for (let i = 0; i < 6; i++) {
    const s = await open(`/topologies/${id}/events?token=${viewer}`);
    await waitFor(() => /retry: \d+/.test(s.raw), 5000, 'retry line');
    retries.add(/retry: (\d+)/.exec(s.raw)[1]);
    s.close();
  }
  check(retries.size > 1, `jittered retry values, got ${[...retries]}`);
}

async function liveEventsNoLeak() {
  const a = await createTopology('a');
  const b = await createTopology('b');
  const sa = await open(`/topologies/${a}/events?token=${viewer}`);
  const sb = await open(`/topologies/${b}/events?token=${viewer}`);
  await waitFor(() => sa.events('snapshot').length && sb.events('snapshot').length, 5000, 'snapshots');
  await publish(`topology.${a}0.status`, { leak: 'prefix-id' }); // an id of which a is a prefix
  await publish(`topology.${b}.status`, { leak: 'other' });
  await publish(`topology.${a}.mutation.applied`, { mutation_id: 'm1', op: 'add_node', version: 1 });
  await publish(`topology.${a}.deeper.custom.event`, { k: 'v' });
  await waitFor(() => sa.frames.length >= 3, 5000, 'a gets its events');
  await waitFor(() => sb.events('status').length === 1, 5000, 'b gets its event');
  const names = sa.frames.map((f) => f.event);
  check(JSON.stringify(names) === JSON.stringify(['snapshot', 'mutation.applied', 'deeper.custom.event']),
    `a's frames: ${names}`);
  const ev = sa.frames[1];
  check(/^[0-9a-f]{16}-\d+-1$/.test(ev.id), `cursor with the version reached ${ev.id}`);
  check(Object.keys(ev.json).sort().join() === 'payload,topic,ts,type', `data fields ${ev.text}`);
  check(ev.json.topic === `topology.${a}.mutation.applied` && ev.json.type === 'mutation.applied' &&
    ev.json.payload.version === 1, `data ${ev.text}`);
  const seqA = +ev.id.split('-')[1], seqB = +sa.frames[2].id.split('-')[1];
  check(seqB > seqA, 'cursors increase');
  check(!sa.raw.includes('prefix-id') && !sa.raw.includes('"other"'), 'no events of other topologies');
  sa.close();
  sb.close();
}

async function keepalives() {
  const id = await createTopology('quiet');
  const s = await open(`/topologies/${id}/events?token=${viewer}`);
  await waitFor(() => s.events('snapshot').length === 1, 5000, 'snapshot');
  const before = s.comments.length;
  await waitFor(() => s.comments.length >= before + 2, 4000, 'two keepalives after 1 s silences');
  check(s.comments.slice(before).every((c) => c.text === 'keepalive'), 'keepalive comments');
  s.close();
}

// Events published while the stream opens are never lost after the snapshot.
async function subscribeBeforeSnapshot() {
  const id = await createTopology('race');
  let n = 0;
  let stop = false;
  const pub = (async () => { while (!stop && n < 400) { n++; await publish(`topology.${id}.tick`, { n }); } })();
  await waitFor(() => n >= 20, 5000, 'publisher started');
  const s = await open(`/topologies/${id}/events?token=${viewer}`);
  await waitFor(() => n >= 150, 10000, 'more events after the stream opened');
  stop = true;
  await pub;
  await waitFor(() => s.events('tick').length > 0 && s.events('tick').at(-1).json.payload.n === n, 5000,
    'the last event arrives');
  const got = s.events('tick').map((f) => f.json.payload.n);
  for (let i = 1; i < got.length; i++) check(got[i] === got[i - 1] + 1, `gap after ${got[i - 1]}: ${got[i]}`);
  check(s.frames[0].event === 'snapshot', 'snapshot first');
  s.close();
}

// Each topology version has one mutation.applied event: a stream that sees a version
// skipped (the event never reached the bus) gets a fresh snapshot instead of a silent gap.
async function versionGap() {
  const id = await createTopology('gap');
  const s = await open(`/topologies/${id}/events?token=${viewer}`);
  await waitFor(() => s.events('snapshot').length === 1, 5000, 'snapshot');
  const gapsBefore = await metric('topobus_sse_version_gaps_total');
  const applied = (v) => publish(`topology.${id}.mutation.applied`, { mutation_id: `m${v}`, op: 'add_node', version: v });
  for (const v of [1, 2, 3]) await applied(v);
  await waitFor(() => s.events('mutation.applied').length === 3, 5000, 'versions 1-3');
  check(s.events('snapshot').length === 1, 'contiguous versions need no snapshot');
  await applied(5);
  await waitFor(() => s.events('snapshot').length === 2, 5000, 'a snapshot after version 4 was skipped');
  check(!s.events('mutation.applied').some((f) => f.json.payload.version === 5), 'the event past the gap is not sent alone');
  check(s.frames.at(-1).event === 'snapshot', 'the snapshot is the last frame');
  check(await metric('topobus_sse_version_gaps_total') === gapsBefore + 1, 'the gap is counted');
  s.close();
}

async function resume() {
  const id = await createTopology('resume');
  const s = await open(`/topologies/${id}/events?token=${viewer}`);
  await waitFor(() => s.events('snapshot').length === 1, 5000, 'snapshot');
  // A versioned event first: from it on, cursors carry the version the client reached,
  // which a resume must continue (an unknown version always gets a snapshot).
  await publish(`topology.${id}.mutation.applied`, { mutation_id: 'm1', op: 'add_node', version: 1 });
  for (let i = 1; i <= 3; i++) await publish(`topology.${id}.step`, { i });
  await waitFor(() => s.events('step').length === 3, 5000, 'three events');
  const cursor = s.events('step')[0].id;
  s.close();
  for (let i = 4; i <= 5; i++) await publish(`topology.${id}.step`, { i });
  for (const how of ['header', 'query']) {
    const r = how === 'header'
      ? await open(`/topologies/${id}/events?token=${viewer}`, { 'last-event-id': cursor })
      : await open(`/topologies/${id}/events?token=${viewer}&last_event_id=${cursor}`);
    await waitFor(() => r.events('step').length === 4, 5000, `replay by ${how}`);
    check(r.events('snapshot').length === 0, `no snapshot when replaying (${how})`);
    check(r.events('step').map((f) => f.json.payload.i).join() === '2,3,4,5', `replayed in order (${how})`);
    r.close();
  }
  // A cursor of another bus instance, or garbage, gets a snapshot.
  for (const bad of ['0123456789abcdef-2', 'garbage']) {
    const r = await open(`/topologies/${id}/events?token=${viewer}`, { 'last-event-id': bad });
    await waitFor(() => r.events('snapshot').length === 1, 5000, `snapshot for ${bad}`);
    r.close();
  }
}

// The npm eventsource client: named events, and Last-Event-ID on its own reconnect.
async function eventSourceClient() {
  const id = await createTopology('es');
  const seen = [];
  const es = new EventSource(`${gw.base}/topologies/${id}/events?token=${viewer}`);
  for (const name of ['snapshot', 'mutation.applied', 'status']) {
    es.addEventListener(name, (e) => seen.push({ name, id: e.lastEventId, data: JSON.parse(e.data) }));
  }
  try {
    await waitFor(() => seen.length === 1, 5000, 'eventsource snapshot');
    await publish(`topology.${id}.status`, { state: 'active', previous: 'deploying' });
    await publish(`topology.${id}.mutation.applied`, { mutation_id: 'm9', op: 'add_node', version: 1 });
    await waitFor(() => seen.length === 3, 5000, 'eventsource events');
    check(seen[1].name === 'status' && seen[1].data.payload.state === 'active', 'status event');
    check(seen[2].name === 'mutation.applied' && seen[2].data.payload.version === 1, 'applied event');
    check(/^[0-9a-f]{16}-\d+-1$/.test(seen[2].id), `lastEventId is the cursor: ${seen[2].id}`);
  } finally {
    es.close();
  }
}

async function perUserCap() {
  const id = await createTopology('cap');
  const carol = gw.token('carol', 'viewer');
  const streams = [];
  for (let i = 0; i < 5; i++) {
    const s = await open(`/topologies/${id}/events?token=${carol}`);
    check(s.status === 200, `stream ${i + 1}: ${s.status}`);
    streams.push(s);
  }
  const sixth = await request(gw.base, 'GET', `/topologies/${id}/events?token=${carol}`);
  check(sixth.status === 429 && sixth.headers['retry-after'] === '5', `6th: ${sixth.status} ${sixth.headers['retry-after']}`);
  const missing = await request(gw.base, 'GET', `/topologies/t_unknown0000000000/events?token=${carol}`);
  check(missing.status === 404, `404 before 429: ${missing.status}`);
  streams.pop().close();
  // The slot comes back as soon as the gateway sees the close (hang-up watcher).
  let next;
  await waitFor(async () => {
    next = new Stream(gw.base, `/topologies/${id}/events?token=${carol}`);
    await next.ready;
    if (next.status === 200) return true;
    next.close();
    return false;
  }, 2000, 'a closed stream frees its slot');
  streams.push(next);
  for (const s of streams) s.close();
}

async function cleanupIsPrompt() {
  await waitFor(async () => (await metric('topobus_sse_streams')) === 0, 3000, 'no streams left open');
  await waitFor(async () => (await metric('topobus_sse_subscriptions')) === 0, 3000,
    'subscriptions closed with their last stream');
  // 100 streams that hang up leave an idle process (the lws 4.1.6 spin is handled).
  const id = await createTopology('idle');
  const streams = [];
  for (let i = 0; i < 100; i++) streams.push(await open(`/topologies/${id}/events?token=${gw.token(`u${i}`, 'viewer')}`));
  for (const s of streams) s.close();
  await waitFor(async () => (await metric('topobus_sse_streams')) === 0, 5000, 'all 100 closed');
  const t0 = h.cpuTicks(gw.proc.pid);
  await new Promise((r) => setTimeout(r, 1500));
  const used = h.cpuTicks(gw.proc.pid) - t0;
  check(used <= 10, `idle CPU after 100 hang-ups: ${used} ticks in 1.5 s`);
}

async function main() {
  await gw.start();
  editor = gw.token('ed', 'editor,viewer');
  viewer = gw.token('vi', 'viewer');
  publisher = gw.token('pu', 'publisher');
  await h.runCases([
    ['auth order 401 → 403 → 404, bearer, single-use tickets', authOrder],
    ['wire format: headers, retry, keepalive, snapshot with in-flight rows', wireFormat],
    ['live events under derived names, no leaks between topologies', liveEventsNoLeak],
    ['keepalives after silence', keepalives],
    ['subscribe before snapshot: no gap', subscribeBeforeSnapshot],
    ['a skipped topology version resyncs the stream', versionGap],
    ['resume by Last-Event-ID and last_event_id, snapshot for foreign cursors', resume],
    ['npm eventsource: named events and cursors', eventSourceClient],
    ['per-user cap: 429 with Retry-After, slot freed on close', perUserCap],
    ['closed streams are cleaned up promptly and leave the process idle', cleanupIsPrompt],
    ['SIGTERM exits 0 and no credential reaches the log', async () => {
      const r = await gw.stop();
      check(r.code === 0, `exit ${r.code} ${r.signal}`);
      for (const t of [editor, viewer, publisher]) check(!r.stderr.includes(t), 'token in the log');
      check(!/ticket=|token=/.test(r.stderr), 'query strings in the log');
    }],
  ], async () => { await gw.stop(); gw.cleanup(); });
}

main();
