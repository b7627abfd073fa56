// Several gateways (CONTRACT §3.8, issue "scale out"): two `topobus gateway`
// processes on one port over one NATS with JetStream and one store share
// the streams; SIGTERM one and its EventSource clients reconnect to the
// other and resume from their cursors without a gap. Tickets are valid only
// on the gateway that minted them. Usage: node scale_out.js <topobus>
'use strict';
const { EventSource } = require('eventsource');
const h = require('./lib/harness');
const { check, request, waitFor, within } = h;

const topobus = process.argv[2];
const nats = new h.Nats(true);
const gateways = [];

async function gateway(port, dir) {
  const g = new h.Gateway(topobus, { bus: nats.url, keepalive: 1, drain: 1, dir, env: { TOPOBUS_SSE_MAX_PER_USER: '0' } });
  g.port = port;
  await g.start();
  gateways.push(g);
  // A gateway reaches NATS on a thread of its own, late on a loaded host; a stream opened
  // before that gets a second snapshot once it has, which the resume checks would count.
  await waitFor(async () => (await request(g.base, 'GET', '/readyz')).json?.bus === 'up', 10000,
    'the gateway reached NATS');
  return g;
}

async function pub(topic, payload) {
  const p = h.run(topobus, ['pub', topic, JSON.stringify(payload), '--bus', nats.url]);
  const r = await within(p.exited, 10000, 'topobus pub');
  check(r.code === 0, `pub exit ${r.code}: ${r.stderr}`);
}

async function ticketsArePerGateway() {
  const a = await gateway(0);
  const b = await gateway(0, a.dir);
  const token = a.token('carol', 'viewer,editor');
  const t = await request(a.base, 'POST', '/topologies', { token, body: { name: 'tickets' } });
  const id = t.json.id;
  const fromA = (await request(a.base, 'POST', '/auth/sse-ticket', { token })).json.ticket;
  const onB = await request(b.base, 'GET', `/topologies/${id}/events?ticket=${fromA}`);
  check(onB.status === 401, `a ticket from gateway A on gateway B: ${onB.status}`);
  const s = new h.Stream(a.base, `/topologies/${id}/events?ticket=${fromA}`);
  await within(s.ready, 5000, 'stream on A');
  check(s.status === 200, `the same ticket on A: ${s.status}`);
  s.close();
  for (const g of [a, b]) check((await g.stop()).code === 0, 'exit 0');
  gateways.length = 0;
}

async function survivorTakesOverStreams() {
  const port = await h.freePort();
  const a = await gateway(port);
  const b = await gateway(port, a.dir);
  const token = a.token('dave', 'viewer,editor');
  const id = (await request(a.base, 'POST', '/topologies', { token, body: { name: 'shared' } })).json.id;
  const clients = [];
  for (let c = 0; c < 8; c++) {
    const got = [];
    const es = new EventSource(`${a.base}/topologies/${id}/events?token=${token}`);
    es.addEventListener('snapshot', () => got.push({ snapshot: true }));
    es.addEventListener('status', () => got.push({ status: true }));
    es.addEventListener('step', (e) => got.push(JSON.parse(e.data).payload.i));
    clients.push({ es, got });
  }
  await waitFor(() => clients.every((c) => c.got.length >= 1), 10000, 'every client has its snapshot');
  // Both gateways answer on one port, so ask the kernel which process holds which connection.
  const streamsOn = async (g) => {
    const out = require('child_process').execFileSync(h.which('ss'),
      ['-Htnp', 'state', 'established', `( sport = :${port} )`]).toString();
    return out.split('\n').filter((l) => l.includes(`pid=${g.proc.pid},`)).length;
  };
  const onA = await streamsOn(a);
  const onB = await streamsOn(b);
  console.log(`  streams per gateway on the shared port: ${onA} + ${onB}`);
  check(onA + onB === 8 && onA > 0 && onB > 0, `the kernel spreads streams over both: ${onA} + ${onB}`);
  // A change event first: from it on, cursors carry the version the clients reached (0),
  // which is what lets a resume on the other gateway prove it continues.
  await pub(`topology.${id}.status`, { state: 'pending', previous: 'pending', version: 0 });
  await waitFor(() => clients.every((c) => c.got.some((x) => x.status)), 10000, 'every client has the status');
  let i = 0;
  // Events keep coming while gateway A drains and its clients move to B.
  const stop = a.stop();
  const sender = (async () => { while (i < 30) { i++; await pub(`topology.${id}.step`, { i }); await new Promise((r) => setTimeout(r, 100)); } })();
  const r = await stop;
  check(r.code === 0, `gateway A exit ${r.code}`);
  await sender;
  await waitFor(() => clients.every((c) => c.got.filter((x) => typeof x === 'number').at(-1) === 30), 20000,
    'every client reaches the last event through the survivor');
  check(await streamsOn(b) === 8, 'the survivor holds every stream');
  for (const c of clients) {
    const steps = c.got.filter((x) => typeof x === 'number');
    const first = steps[0];
    check(first === 1 && steps.every((x, k) => x === first + k), `all 30, no gap, no repeat: ${steps}`);
    check(c.got.filter((x) => x.snapshot).length === 1, `resumed by replay, not a new snapshot: ${JSON.stringify(c.got)}`);
    c.es.close();
  }
  check((await b.stop()).code === 0, 'survivor exit 0');
  gateways.length = 0;
}

async function main() {
  await nats.start();
  await h.runCases([
    ['a ticket is valid only on the gateway that minted it', ticketsArePerGateway],
    ['SIGTERM one of two gateways on one port: its clients resume on the other without a gap', survivorTakesOverStreams],
  ], async () => {
    for (const g of gateways) { await g.stop(); }
    if (gateways[0]) gateways[0].cleanup();
    await nats.stop();
  });
}

main();
