// Stream flow control and lifecycle (CONTRACT §3.5, §3.6, §3.8): the bus
// disabled, a client that stops reading next to one that keeps up, and the
// SIGTERM drain spread over --drain seconds. Usage: node sse_flow.js <topobus>
'use strict';
const net = require('net');
const h = require('./lib/harness');
const { check, request, Stream, waitFor, within } = h;

const topobus = process.argv[2];

async function setup(opts) {
  const gw = new h.Gateway(topobus, opts);
  await gw.start();
  gw.editor = gw.token('ed', 'editor,viewer,publisher');
  const r = await request(gw.base, 'POST', '/topologies', { token: gw.editor, body: { name: 'flow' } });
  check(r.status === 201, `create ${r.status}`);
  gw.id = r.json.id;
  return gw;
}

async function open(gw, token = gw.editor) {
  const s = new Stream(gw.base, `/topologies/${gw.id}/events?token=${token}`);
  await within(s.ready, 5000, 'stream open');
  check(s.status === 200, `status ${s.status}`);
  await waitFor(() => s.events('snapshot').length >= 1, 5000, 'snapshot');
  return s;
}

async function busDisabled() {
  const gw = await setup({ bus: 'none', keepalive: 1 });
  try {
    const s = await open(gw);
    check(s.events('snapshot')[0].json.bus === 'disabled', `bus field: ${s.events('snapshot')[0].text}`);
    const r = await request(gw.base, 'POST', '/publish',
      { token: gw.editor, body: { topic: `topology.${gw.id}.x`, payload: {} } });
    check(r.status === 202, `publish with the bus disabled: ${r.status}`);
    await waitFor(() => s.comments.length >= 3, 4000, 'keepalives');
    check(s.frames.length === 1, `nothing but the snapshot: ${s.frames.map((f) => f.event)}`);
    s.close();
  } finally {
    await gw.stop();
    gw.cleanup();
  }
}

// A raw client that sends its request and then never reads.
function stalledClient(gw) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(gw.port, '127.0.0.1', () => {
      sock.write(`GET /topologies/${gw.id}/events?token=${gw.editor} HTTP/1.1\r\nHost: x\r\n\r\n`);
      sock.pause();
      resolve(sock);
    });
    sock.on('error', reject);
  });
}

async function stalledClientDoesNotHurtOthers() {
  const gw = await setup({ keepalive: 1 });
  try {
    const live = await open(gw);
    const stalled = await stalledClient(gw);
    await new Promise((r) => setTimeout(r, 200));
    const rss0 = h.rssKb(gw.proc.pid);
    let maxQueued = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const m = /^topobus_sse_queued_bytes (\d+)$/m.exec((await request(gw.base, 'GET', '/metrics')).body);
        maxQueued = Math.max(maxQueued, +m[1]);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const blob = 'x'.repeat(30000);
    const total = 600; // 18 MB through the stalled stream's path
    const latencies = [];
    const keep = new (require('http').Agent)({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < total; i++) {
      await new Promise((resolve, reject) => {
        const body = JSON.stringify({ topic: `topology.${gw.id}.bulk`, payload: { i, sent: Date.now(), blob } });
        const req = require('http').request(`${gw.base}/publish`, {
          method: 'POST', agent: keep,
          headers: { authorization: `Bearer ${gw.editor}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        }, (res) => { res.resume(); res.on('end', resolve); });
        req.on('error', reject);
        req.end(body);
      });
    }
    keep.destroy();
    sampling = false;
    await sampler;
    await waitFor(() => live.events('bulk').length === total, 20000, 'the live client gets every event');
    for (const f of live.events('bulk')) latencies.push(f.at - f.json.payload.sent);
    latencies.sort((a, b) => a - b);
    const p99 = latencies[Math.floor(latencies.length * 0.99)];
    check(live.events('bulk').every((f, i) => f.json.payload.i === i), 'in order, nothing dropped');
    check(live.events('snapshot').length === 1, 'the live client never needed a resync');
    check(p99 < 1000, `live p99 ${p99} ms while another client is stalled`);
    const metrics = (await request(gw.base, 'GET', '/metrics')).body;
    const resyncs = +/^topobus_sse_resyncs_total (\d+)$/m.exec(metrics)[1];
    check(resyncs >= 1, `the stalled stream's backlog was dropped (resyncs ${resyncs})`);
    // Each stream's backlog is capped at 1 MiB (plus the frame that overflows it).
    check(maxQueued > 0 && maxQueued <= 2 * (1024 * 1024 + 31000), `queued bytes peaked at ${maxQueued}`);
    const grown = h.rssKb(gw.proc.pid) - rss0;
    console.log(`  18 MB through a stalled stream: queues peaked at ${maxQueued} B, RSS +${grown} kB` +
      ` (the bus ring keeps recent events for replay), live p99 ${p99} ms`);
    // When the stalled client reads again it finds a fresh snapshot, not a silent gap.
    let text = '';
    stalled.on('data', (d) => { text += d.toString(); });
    stalled.resume();
    await waitFor(() => (text.match(/event: snapshot/g) || []).length >= 2, 10000, 'resync snapshot on the stalled stream');
    stalled.destroy();
    live.close();
  } finally {
    await gw.stop();
    gw.cleanup();
  }
}

async function drainSpreadsCloses() {
  const gw = await setup({ keepalive: 30, drain: 2 });
  const streams = [];
  for (let i = 0; i < 8; i++) streams.push(await open(gw, gw.token(`u${i}`, 'viewer')));
  const t0 = Date.now();
  gw.proc.kill('SIGTERM');
  // New connections are refused at once.
  await waitFor(() => new Promise((resolve) => {
    const s = net.connect(gw.port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(false); });
    s.on('error', () => resolve(true));
  }), 1000, 'listening socket closed');
  await waitFor(() => streams.every((s) => s.closed), 6000, 'every stream closed');
  const r = await within(gw.proc.exited, 10000, 'exit');
  check(r.code === 0, `exit ${r.code} ${r.signal}`);
  const at = streams.map((s) => s.closedAt - t0).sort((a, b) => a - b);
  console.log(`  stream closes after SIGTERM (ms): ${at.join(' ')}`);
  check(at[0] < 700, `first close soon: ${at[0]}`);
  check(at[7] >= 1500 && at[7] < 3500, `last close near the 2 s window: ${at[7]}`);
  check(at[3] - at[0] >= 400, `closes are spread, not at once: ${at}`);
  gw.proc = null;
  gw.cleanup();
}

h.runCases([
  ['bus none: snapshot says disabled, then keepalives only', busDisabled],
  ['a stalled client is resynced; the live client keeps up in order', stalledClientDoesNotHurtOthers],
  ['SIGTERM: stop accepting, close streams spread over --drain, exit 0', drainSpreadsCloses],
]);
