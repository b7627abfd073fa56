// The store going away under a gateway and a mutator (PostgreSQL stopped and
// started again, issue "scale out"): requests fail fast with 503
// store_unavailable and never hang; open streams stay open on keepalives; a
// stream opened during the outage answers 200 at once and gets its snapshot
// when the store is back; the mutator resumes. Usage: node store_outage.js <topobus>
'use strict';
const h = require('./lib/harness');
const { Postgres } = require('./lib/cluster');
const { check, request, Stream, waitFor, within } = h;

const topobus = process.argv[2];
const pg = new Postgres();
let gw;
let mutator;

async function main() {
  await pg.start();
  gw = new h.Gateway(topobus, { db: pg.url, bus: 'mem://', keepalive: 1 });
  await gw.start();
  const token = gw.token('ops', 'admin');
  let id;
  let before;
  await h.runCases([
    ['a topology and a stream while the store is up', async () => {
      const r = await request(gw.base, 'POST', '/topologies', { token, body: { name: 'outage' } });
      check(r.status === 201, `create ${r.status}`);
      id = r.json.id;
      mutator = h.run(topobus, ['mutator', '--db', pg.url, '--bus', 'none', '--poll', '1'],
        { env: { ...process.env, TOPOBUS_LOG: 'info' } });
      // A mutator that cannot open the store at start exits (its supervisor
      // restarts it); the outage under test is one that comes after.
      await waitFor(() => /mutator: started/.test(mutator.out.stderr), 10000, 'the mutator started');
      before = new Stream(gw.base, `/topologies/${id}/events?token=${token}`);
      await within(before.ready, 5000, 'stream');
      await waitFor(() => before.events('snapshot').length === 1, 5000, 'snapshot');
    }],
    ['store down: requests answer 503 store_unavailable fast, the open stream keeps going', async () => {
      pg.halt();
      for (const [method, path, body] of [['GET', `/topologies/${id}`], ['GET', '/topologies'],
        ['POST', `/topologies/${id}/mutations`, { op: 'add_node', payload: { id: 'n1', kind: 'x' } }]]) {
        const t0 = Date.now();
        const r = await request(gw.base, method, path, { token, body });
        const ms = Date.now() - t0;
        check(r.status === 503 && r.json.error === 'store_unavailable', `${method} ${path}: ${r.status} ${r.body}`);
        check(ms < 3000, `${method} ${path} answered in ${ms} ms`);
      }
      const ready = await request(gw.base, 'GET', '/readyz');
      check(ready.status === 503 && ready.json.store === 'down', `readyz ${ready.status} ${ready.body}`);
      const k = before.comments.length;
      await waitFor(() => before.comments.length >= k + 2, 4000, 'keepalives on the open stream');
      check(!before.closed, 'the open stream stays open');
    }],
    ['a stream opened during the outage: 200 now, its snapshot when the store is back', async () => {
      const during = new Stream(gw.base, `/topologies/${id}/events?token=${token}`);
      await within(during.ready, 5000, 'stream during the outage');
      check(during.status === 200, `status ${during.status}`);
      await waitFor(() => during.comments.length >= 2, 4000, 'keepalives without a snapshot');
      check(during.events('snapshot').length === 0, 'no snapshot while the store is away');
      pg.resume();
      await waitFor(() => during.events('snapshot').length === 1, 10000, 'the snapshot once the store is back');
      check(during.events('snapshot')[0].json.topology_id === id, 'the right topology');
    }],
    ['the store is back: requests work again and the mutator resumes', async () => {
      await waitFor(async () => (await request(gw.base, 'GET', '/readyz')).status === 200, 10000, 'ready again');
      const r = await request(gw.base, 'POST', `/topologies/${id}/mutations`,
        { token, body: { op: 'add_node', payload: { id: 'n1', kind: 'router' } } });
      check(r.status === 202, `enqueue after the outage: ${r.status} ${r.body}`);
      await waitFor(async () => (await request(gw.base, 'GET', `/topologies/${id}`, { token })).json.version === 1,
        10000, 'the mutator applied it').catch((e) => {
        process.stderr.write(`mutator log:\n${mutator.out.stderr}${mutator.out.stdout}`);
        throw e;
      });
      check(mutator.exitCode === null, 'the mutator kept running through the outage');
      check(!before.closed, 'the first stream is still open');
    }],
  ], async () => {
    if (mutator) { mutator.kill('SIGTERM'); await within(mutator.exited, 10000, 'mutator exit').catch(() => {}); }
    if (gw) { await gw.stop(); gw.cleanup(); }
    pg.stop();
  });
}

main();
