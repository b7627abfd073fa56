// Interoperability of `topobus pub`/`topobus sub` with the `nats` npm client
// (a NATS client nobody here wrote), through a real nats-server on a random
// loopback port. Usage: node bus_interop.js <path to topobus>
'use strict';
const { connect, StringCodec } = require('nats');
const { which, freePort, waitPort, run, within, waitFor, check, children } = require('./lib/harness');

const topobus = process.argv[2];
const sc = StringCodec();

async function nodeToTopobus(url) {
  const sub = run(topobus, ['sub', 'topology.ia.>', '--count', '1', '--bus', url]);
  await waitFor(() => sub.out.stderr.includes('subscribed pattern='), 10000, 'topobus sub ready');
  const nc = await connect({ servers: url });
  const envelope = {
    v: 1, id: 'ab'.repeat(16), topic: 'topology.spoofed.status', type: 'status',
    ts: Date.now() / 1000, payload: { from: 'node', n: 1 },
  };
  nc.publish('topology.ia.status', sc.encode(JSON.stringify(envelope)));
  await nc.flush();
  await nc.close();
  const r = await within(sub.exited, 10000, 'topobus sub exit after --count 1');
  check(r.code === 0, `topobus sub exit code ${r.code} (${r.stderr})`);
  const lines = r.stdout.trim().split('\n');
  check(lines.length === 1, `one line, got ${JSON.stringify(r.stdout)}`);
  const ev = JSON.parse(lines[0]);
  check(ev.subject === 'topology.ia.status', `subject from the transport, got ${ev.subject}`);
  check(ev.type === 'status', `type ${ev.type}`);
  check(Math.abs(ev.ts - envelope.ts) < 0.001, `ts ${ev.ts}`);
  check(ev.payload.from === 'node' && ev.payload.n === 1, `payload ${JSON.stringify(ev.payload)}`);
}

async function topobusToNode(url) {
  const nc = await connect({ servers: url });
  const got = nc.subscribe('topology.ib.status', { max: 1 });
  await nc.flush();
  const before = Date.now() / 1000;
  const pub = run(topobus, ['pub', 'topology.ib.status', '{"from":"topobus","list":[1,2]}', '--bus', url]);
  const r = await within(pub.exited, 10000, 'topobus pub exit');
  check(r.code === 0, `topobus pub exit code ${r.code} (${r.stderr})`);
  let msg;
  for await (const m of got) { msg = m; }
  await nc.close();
  check(msg && msg.subject === 'topology.ib.status', 'message on the same subject');
  const env = JSON.parse(sc.decode(msg.data));
  check(env.v === 1, `v ${env.v}`);
  check(/^[0-9a-f]{32}$/.test(env.id), `id ${env.id}`);
  check(env.topic === 'topology.ib.status', `topic ${env.topic}`);
  check(env.type === 'status', `type ${env.type}`);
  check(typeof env.ts === 'number' && env.ts >= before - 1 && env.ts <= Date.now() / 1000 + 1, `ts ${env.ts}`);
  check(env.payload.from === 'topobus' && env.payload.list[1] === 2, `payload ${JSON.stringify(env.payload)}`);
  check(Object.keys(env).sort().join() === 'id,payload,topic,ts,type,v', `fields ${Object.keys(env)}`);
}

async function subExitsCleanlyOnSignals(url) {
  for (const sig of ['SIGTERM', 'SIGINT']) {
    const sub = run(topobus, ['sub', 'topology.>', '--bus', url]);
    await waitFor(() => sub.out.stderr.includes('subscribed pattern='), 10000, 'topobus sub ready');
    sub.kill(sig);
    const r = await within(sub.exited, 10000, `topobus sub exit on ${sig}`);
    check(r.code === 0, `exit code on ${sig}: ${r.code} ${r.signal} (${r.stderr})`);
  }
}

async function main() {
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const server = run(which('nats-server'), ['-a', '127.0.0.1', '-p', String(port)]);
  try {
    await waitPort(port, 10000);
    await nodeToTopobus(url);
    console.log('ok: an envelope published by the nats npm client reached topobus sub');
    await topobusToNode(url);
    console.log('ok: topobus pub was read back by the nats npm client with the CONTRACT §2 fields');
    await subExitsCleanlyOnSignals(url);
    console.log('ok: topobus sub exits 0 on SIGTERM and SIGINT');
  } finally {
    for (const c of children) if (c !== server) c.kill('SIGKILL');
    server.kill('SIGTERM');
    await within(server.exited, 10000, 'nats-server exit');
  }
}

main().then(() => process.exit(0), (e) => { console.error(e.stack || String(e)); process.exit(1); });
