// The scale-out fault test (issue "scale out"): PostgreSQL, a 3-node NATS
// cluster with JetStream, two gateways on one port and two mutators, all
// real processes. 20 EventSource clients watch 6 topologies while 300
// mutations are enqueued; meanwhile one NATS node is SIGKILLed, one gateway
// SIGTERMed, one mutator SIGKILLed and restarted. At the end every mutation
// is applied exactly once and in order, every client's last snapshot plus
// the mutation.applied events after it hold every version up to the final
// one (a gap must end in a new snapshot, never pass silently), and nothing
// else exited.
// Usage: node fault_test.js <topobus>
'use strict';
const { EventSource } = require('eventsource');
const { connect } = require('nats');
const h = require('./lib/harness');
const { Postgres, NatsCluster } = require('./lib/cluster');
const { check, request, waitFor } = h;

const topobus = process.argv[2];
const TOPOLOGIES = 6;
const PER_TOPOLOGY = 50;
const CLIENTS = 20;
const pg = new Postgres();
const nats = new NatsCluster();
const gateways = [];
const mutators = [];
const clients = [];
let ids = [];

function startMutator() {
  const m = h.run(topobus, ['mutator', '--bus', nats.url, '--db', pg.url, '--poll', '1', '--lease', '3'],
    { env: { ...process.env, TOPOBUS_LOG: 'info' } });
  mutators.push(m);
  return m;
}

async function jetstreamReady() {
  await waitFor(async () => {
    try {
      const nc = await connect({ servers: nats.url.split(','), timeout: 1000 });
      try { await (await nc.jetstreamManager()).getAccountInfo(); return true; } finally { await nc.close(); }
    } catch (e) { return false; }
  }, 30000, 'the JetStream cluster elects a leader');
}

// A client that follows one topology: the version of its last snapshot, the versions
// applied since, and the newest version its view holds.
function follow(base, id, token) {
  const c = { id, snapshots: 0, base: -1, seen: new Set(), version: -1, errors: 0, lastError: '' };
  c.es = new EventSource(`${base}/topologies/${id}/events?token=${token}`);
  c.es.addEventListener('snapshot', (e) => {
    c.snapshots++;
    c.base = c.version = JSON.parse(e.data).version;
    c.seen.clear();
  });
  c.es.addEventListener('mutation.applied', (e) => {
    const v = JSON.parse(e.data).payload.version;
    c.seen.add(v);
    c.version = Math.max(c.version, v);
  });
  c.es.addEventListener('error', (e) => { c.errors++; c.lastError = `${e.code || ''} ${e.message || ''}`.trim(); });
  clients.push(c);
  return c;
}

// Versions after the client's last snapshot that it never heard of.
function missing(c, final) {
  const out = [];
  for (let v = c.base + 1; v <= final; v++) if (!c.seen.has(v)) out.push(v);
  return out;
}

// On failure: each client's view and the processes' notable log lines, on stderr.
function explain() {
  clients.forEach((c, k) => {
    const gap = missing(c, PER_TOPOLOGY);
    console.error(`client ${k} topology ${ids.indexOf(c.id)}: version ${c.version} snapshot ${c.base} ` +
      `(${c.snapshots} snapshots) missing ${gap.length ? gap.join(',') : 'none'} state ${c.es.readyState} ` +
      `errors ${c.errors}${c.lastError ? ` (${c.lastError})` : ''}`);
  });
  const notable = (text) => (text || '').split('\n')
    .filter((l) => / (NOTICE|WARN|ERR) |\/events |Sanitizer|runtime error|^==\d+==|^ +#\d+ /.test(l))
    .slice(-80).join('\n');
  gateways.forEach((g, k) => console.error(`--- gateway ${k} (exit ${g.proc ? `${g.proc.exitCode} ${g.proc.signalCode}` : 'stopped'})\n${notable(g.log)}`));
  mutators.forEach((m, k) => console.error(`--- mutator ${k}\n${notable(m.out.stderr)}`));
}

// Enqueues one mutation, retrying across the gateway that goes away; never twice.
async function enqueue(base, token, id, node) {
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const r = await request(base, 'POST', `/topologies/${id}/mutations`,
        { token, body: { op: 'add_node', payload: { id: node, kind: 'router' } } });
      if (r.status === 202) return;
      check(r.status === 503, `enqueue ${node}: ${r.status} ${r.body}`);
    } catch (e) {
      // The request may have landed before the connection broke: look before sending again.
      try {
        const rows = await request(base, 'GET', `/topologies/${id}/mutations`, { token });
        if (rows.status === 200 && rows.json.some((m) => m.payload.id === node)) return;
      } catch (e2) { /* ask again next round */ }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`could not enqueue ${node} on ${id}`);
}

async function main() {
  await pg.start();
  await nats.start();
  await jetstreamReady();
  const port = await h.freePort();
  for (let i = 0; i < 2; i++) {
    const g = new h.Gateway(topobus, {
      bus: nats.url, keepalive: 1, drain: 2, dir: gateways[0] && gateways[0].dir,
      db: pg.url, env: { TOPOBUS_NATS_REPLICAS: '3', TOPOBUS_SSE_MAX_PER_USER: '0' },
    });
    g.port = port;
    await g.start();
    gateways.push(g);
  }
  startMutator();
  startMutator();
  const base = gateways[0].base;
  const token = gateways[0].token('fault', 'admin');
  await h.runCases([
    ['6 topologies, deployed, with 20 clients following them', async () => {
      for (let t = 0; t < TOPOLOGIES; t++) {
        const r = await request(base, 'POST', '/topologies', { token, body: { name: `f${t}` } });
        check(r.status === 201, `create ${r.status} ${r.body}`);
        ids.push(r.json.id);
        check((await request(base, 'POST', `/topologies/${r.json.id}/deploy`, { token })).status === 202, 'deploy');
      }
      for (let c = 0; c < CLIENTS; c++) follow(base, ids[c % TOPOLOGIES], token);
      await waitFor(() => clients.every((c) => c.snapshots >= 1), 15000, 'every client has a snapshot');
    }],
    ['300 mutations while a NATS node, a gateway and a mutator fail', async () => {
      let sent = 0;
      const faults = [
        [60, async () => { await nats.kill(0); console.log('  killed NATS node n1 (SIGKILL)'); }],
        [120, async () => { const r = await gateways[0].stop(); check(r.code === 0, `gateway exit ${r.code}`); console.log('  stopped gateway A (SIGTERM, drain)'); }],
        [180, async () => {
          const m = mutators[0];
          m.kill('SIGKILL');
          await h.within(m.exited, 10000, 'mutator exit');
          mutators.shift();
          console.log('  killed mutator 1 (SIGKILL), restarting it');
          await new Promise((r) => setTimeout(r, 500));
          startMutator();
        }],
      ];
      for (let k = 1; k <= PER_TOPOLOGY; k++) {
        await Promise.all(ids.map((id) => enqueue(base, token, id, `n${k}`)));
        sent += ids.length;
        while (faults.length && sent >= faults[0][0]) await faults.shift()[1]();
      }
      check(sent === TOPOLOGIES * PER_TOPOLOGY, `sent ${sent}`);
    }],
    ['every mutation applied exactly once, in order per topology', async () => {
      const g = gateways[1];
      await waitFor(async () => {
        for (const id of ids) {
          const d = await request(g.base, 'GET', `/topologies/${id}`, { token });
          if (d.status !== 200 || d.json.version !== PER_TOPOLOGY) return false;
        }
        return true;
      }, 90000, 'all topologies at their final version');
      for (const id of ids) {
        const rows = (await request(g.base, 'GET', `/topologies/${id}/mutations`, { token })).json;
        const doc = (await request(g.base, 'GET', `/topologies/${id}`, { token })).json;
        check(rows.length === PER_TOPOLOGY, `${id}: ${rows.length} rows`);
        check(rows.every((r) => r.state === 'applied'), `${id}: not all applied: ${rows.filter((r) => r.state !== 'applied').map((r) => r.state)}`);
        const order = doc.nodes.map((n) => n.id).join();
        const want = Array.from({ length: PER_TOPOLOGY }, (_, k) => `n${k + 1}`).join();
        check(order === want, `${id}: applied out of order: ${order}`);
        check(doc.status === 'active', `${id}: status ${doc.status}`);
      }
      const retried = [];
      for (const id of ids) {
        const rows = (await request(g.base, 'GET', `/topologies/${id}/mutations`, { token })).json;
        retried.push(...rows.filter((r) => r.attempts > 0).map((r) => r.id));
      }
      console.log(`  mutations retried after the mutator crash: ${retried.length}`);
    }],
    ['every client ends consistent with the store, through its reconnects', async () => {
      try {
        await waitFor(() => clients.every((c) => c.version === PER_TOPOLOGY), 30000,
          `clients reach the final version (${clients.map((c) => c.version)})`);
        const gaps = clients.filter((c) => missing(c, PER_TOPOLOGY).length > 0).length;
        check(gaps === 0, `${gaps} clients missed events without a new snapshot`);
        check(clients.every((c) => c.es.readyState === 1), 'every client is connected at the end');
      } catch (e) {
        explain();
        throw e;
      }
      const resnap = clients.filter((c) => c.snapshots > 1).length;
      console.log(`  clients that took a new snapshot: ${resnap} of ${CLIENTS}`);
    }],
    ['no process exited but the ones killed', async () => {
      check(gateways[1].proc && gateways[1].proc.exitCode === null, 'gateway B is running');
      for (const m of mutators) {
        if (m.exitCode !== null) console.error(`--- mutator exited ${m.exitCode}\n${m.out.stderr.split('\n').slice(-15).join('\n')}`);
      }
      check(mutators.length === 2 && mutators.every((m) => m.exitCode === null), 'two mutators are running');
      check(nats.nodes.slice(1).every((n) => n.proc && n.proc.exitCode === null), 'NATS n2 and n3 are running');
      check(pg.alive(), 'PostgreSQL is running');
    }],
  ], async () => {
    for (const c of clients) c.es.close();
    for (const g of gateways) await g.stop();
    for (const m of mutators) { m.kill('SIGTERM'); await h.within(m.exited, 10000, 'mutator exit').catch(() => m.kill('SIGKILL')); }
    if (gateways[0]) gateways[0].cleanup();
    await nats.stop();
    pg.stop();
  });
}

main();
