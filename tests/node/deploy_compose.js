// The compose deployment without an engine: nats-server, `topobus gateway`
// and `topobus mutator` as separate processes, each started the way
// deploy/docker-compose.yml starts its container — the command, and exactly
// the environment the container gets (the image's ENV from deploy/Dockerfile,
// then the service's `environment` as `docker-compose config` normalizes it
// with deploy/.env.example). Then the end-to-end mutation flow through them.
// Usage: node deploy_compose.js <topobus>
//
// The only changes made to what compose gives, and why (each is what the
// container network or a mount does for a container):
//   - a service name as a host (`nats://nats:4222`) → 127.0.0.1 and the port
//     this test's nats-server listens on (no container DNS here);
//   - the gateway's listen address (`0.0.0.0:8080`, the published container
//     port) → 127.0.0.1 and a free port (tests bind loopback only, and other
//     tests run at the same time);
//   - a named volume's mount point (`/var/lib/topobus`, `/data`) → one temp
//     dir per volume, the same dir for every service mounting that volume
//     (so the gateway and the mutator share one SQLite file, as they do in
//     compose); a bind mount (`./nats.conf`) → its host file;
//   - a secret's mount (`/run/secrets/<name>`) → a temp file holding a random
//     secret (the checkout has no deploy/secrets/jwt_secret);
//   - in a copy of deploy/nats.conf (the file the nats command mounts):
//     its client and monitor ports → free ports, its JetStream store_dir
//     (on the nats-data volume) → that volume's temp dir.
// PATH (and sanitizer options of an ASan test run) are passed as well.
'use strict';
const { spawn, spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./lib/harness');
const d = require('./lib/deploy');
const { check, request, Stream, waitFor, within } = h;

const topobus = path.resolve(process.argv[2]);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-compose-'));
const state = {};

function volumeDir(name) {
  const dir = path.join(tmp, `volume-${name}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

// Mount points of a service → host paths (see the header).
function mounts(config, svc) {
  const m = [];
  for (const v of svc.volumes || []) {
    const [src, target] = v.split(':');
    m.push({ target, host: src.startsWith('/') ? src : volumeDir(src) });
  }
  for (const s of svc.secrets || []) {
    const name = s.source || s;
    const target = s.target ? (s.target.startsWith('/') ? s.target : `/run/secrets/${s.target}`) : `/run/secrets/${name}`;
    check(config.secrets[name], `secret ${name} is declared`);
    m.push({ target, host: path.join(tmp, `secret-${name}`) });
  }
  // Longest mount point first, so /a/b wins over /a.
  return m.sort((a, b) => b.target.length - a.target.length);
}

function mapPath(value, ms) {
  for (const { target, host } of ms) {
    if (value === target) return host;
    const i = value.indexOf(`${target}/`);
    if (i >= 0 && (i === 0 || /[:=]$/.test(value.slice(0, i)))) return value.slice(0, i) + host + value.slice(i + target.length);
  }
  return value;
}

// The environment compose gives a service's container, mapped as described.
function serviceEnv(config, name, ports) {
  const svc = config.services[name];
  const runtime = d.dockerfile().pop();
  const env = { ...d.stageEnv(runtime), ...svc.environment };
  const ms = mounts(config, svc);
  const published = (svc.ports || []).map((p) => String(p).replace(/\/tcp$/, '').split(':').pop());
  const mapped = {};
  const applied = [];
  for (const [k, v0] of Object.entries(env)) {
    let v = String(v0);
    // service:port → 127.0.0.1:<that service's port here>
    v = v.replace(/\/\/([A-Za-z0-9_.-]+):(\d+)/g, (all, host, port) => {
      if (!config.services[host]) return all;
      const p = ports[`${host}:${port}`];
      check(p, `no local port for ${host}:${port}`);
      return `//127.0.0.1:${p}`;
    });
    // HOST:<published container port> as a listen address → 127.0.0.1:<free>
    const listen = /^(0\.0\.0\.0|\[::\]|):(\d+)$/.exec(v);
    if (listen && published.includes(listen[2])) v = `127.0.0.1:${ports[`${name}:listen`]}`;
    v = mapPath(v, ms);
    if (v !== String(v0)) applied.push(`${k}: ${v0} → ${v}`);
    mapped[k] = v;
  }
  // Nothing that only means something inside a container may be left.
  for (const [k, v] of Object.entries(mapped)) {
    for (const s of Object.keys(config.services)) check(!new RegExp(`//${s}[:/]`).test(v), `${k}=${v} names service ${s}`);
    for (const { target } of ms) check(!v.includes(target), `${k}=${v} still names ${target}`);
  }
  const workdir = runtime.ins.filter((i) => i.op === 'WORKDIR').pop();
  return {
    env: mapped,
    applied,
    cwd: workdir ? mapPath(workdir.arg, ms) : tmp,
    argv: [...(svc.entrypoint || d.stageJson(runtime, 'ENTRYPOINT')), ...(svc.command || d.stageJson(runtime, 'CMD'))],
  };
}

function processEnv(env) {
  const extra = {};
  for (const k of ['PATH', 'ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS']) if (process.env[k]) extra[k] = process.env[k];
  return { ...extra, ...env };
}

// As h.run, in the container's working directory (the image's WORKDIR, mapped). The
// image's init (tini) is left out: here the test is the parent that reaps.
function spawnService(svc) {
  if (svc.argv[0] === '/usr/bin/tini' && svc.argv[1] === '--') svc.argv = svc.argv.slice(2);
  check(svc.argv[0] === 'topobus', `entrypoint: ${svc.argv[0]}`);
  const child = spawn(topobus, svc.argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: processEnv(svc.env), cwd: svc.cwd });
  h.children.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (x) => { out.stdout += x; });
  child.stderr.on('data', (x) => { out.stderr += x; });
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    h.children.delete(child);
    resolve({ code, signal, ...out });
  }));
  child.out = out;
  return child;
}

async function startAll() {
  const { config } = d.composeConfig(path.join(d.deployDir, '.env.example'));
  state.config = config;
  const ports = {
    'nats:4222': await h.freePort(),
    'nats:8222': await h.freePort(),
    'gateway:listen': await h.freePort(),
  };

  // nats: its command, whose config file (a bind mount) is read here as a
  // copy with only its ports and its store_dir (a volume) substituted:
  // nats-server refuses a -sd flag next to a store_dir in the file.
  const nats = config.services.nats;
  const natsMounts = mounts(config, nats);
  const natsArgs = nats.command.map((a) => mapPath(a, natsMounts));
  const ci = natsArgs.indexOf('-c');
  check(ci >= 0 && fs.existsSync(natsArgs[ci + 1]), `nats command names its mounted config: ${nats.command}`);
  let conf = fs.readFileSync(natsArgs[ci + 1], 'utf8');
  const sub = (re, value, what) => {
    check((conf.match(new RegExp(re.source, 'gm')) || []).length === 1, `nats.conf: one ${what}`);
    conf = conf.replace(new RegExp(re.source, 'm'), (all, key, v) => `${key}${value(v)}`);
  };
  let storeDir;
  sub(/^(\s*port:\s*)(\d+)/, (v) => { check(v === '4222', `nats port ${v}`); return ports['nats:4222']; }, 'port');
  sub(/^(\s*http_port:\s*)(\d+)/, (v) => { check(v === '8222', `monitor port ${v}`); return ports['nats:8222']; }, 'http_port');
  sub(/^(\s*store_dir:\s*)(\S+)/, (v) => { storeDir = mapPath(v, natsMounts); return storeDir; }, 'store_dir');
  check(storeDir && storeDir.startsWith(tmp), `the JetStream store_dir is on a volume: ${storeDir}`);
  natsArgs[ci + 1] = path.join(tmp, 'nats.conf');
  fs.writeFileSync(natsArgs[ci + 1], conf);
  natsArgs.push('-a', '127.0.0.1');
  console.log(`nats-server ${natsArgs.join(' ')}`);
  state.nats = h.run(h.which('nats-server'), natsArgs);
  await h.waitPort(ports['nats:4222'], 10000).catch((e) => { throw new Error(`${e.message}: ${state.nats.out.stderr}`); });
  // The compose healthcheck's URL, on the monitor port here.
  const hcUrl = nats.healthcheck.test.find((a) => /^https?:\/\//.test(a));
  const url = new URL(hcUrl);
  check(url.port === '8222', `nats healthcheck port ${url.port}`);
  url.port = String(ports['nats:8222']);
  await waitFor(async () => (await request(url.origin, 'GET', url.pathname + url.search).catch(() => ({}))).status === 200,
    10000, 'nats healthcheck');
  const varz = await request(url.origin, 'GET', '/varz');
  check(varz.json && varz.json.jetstream && varz.json.jetstream.config, 'JetStream is on');
  check(varz.json.jetstream.config.store_dir.startsWith(storeDir), `JetStream store ${varz.json.jetstream.config.store_dir}`);

  const gw = serviceEnv(config, 'gateway', ports);
  const mu = serviceEnv(config, 'mutator', ports);
  for (const [name, s] of [['gateway', gw], ['mutator', mu]]) console.log(`${name} ${s.argv.join(' ')}\n  ${s.applied.join('\n  ')}`);
  check(gw.env.TOPOBUS_DB === mu.env.TOPOBUS_DB, `one store: ${gw.env.TOPOBUS_DB} vs ${mu.env.TOPOBUS_DB}`);
  check(gw.env.TOPOBUS_BUS === mu.env.TOPOBUS_BUS, 'one bus');
  check(gw.env.TOPOBUS_JWT_SECRET_FILE && !gw.env.TOPOBUS_JWT_SECRET, 'the secret comes from the secret file');
  fs.writeFileSync(gw.env.TOPOBUS_JWT_SECRET_FILE, crypto.randomBytes(32).toString('hex'), { mode: 0o600 });
  state.gwSpec = gw;
  state.base = `http://127.0.0.1:${ports['gateway:listen']}`;
  state.port = ports['gateway:listen'];

  state.gateway = spawnService(gw);
  state.mutator = spawnService(mu);
  await h.waitPort(state.port, 15000);
}

async function healthcheckPasses() {
  const runtime = d.dockerfile().pop();
  const hc = d.healthcheck(runtime);
  check(hc && hc.cmd, 'HEALTHCHECK CMD in exec form');
  // The check runs inside the gateway's container: its environment, its cwd.
  await waitFor(() => spawnSync(hc.cmd[0], hc.cmd.slice(1), { env: processEnv(state.gwSpec.env), timeout: 5000 }).status === 0,
    5000, `${hc.cmd.join(' ')} against the gateway`);
  // And it fails when nothing listens there.
  const r = spawnSync(hc.cmd[0], hc.cmd.slice(1),
    { env: processEnv({ ...state.gwSpec.env, TOPOBUS_LISTEN: `127.0.0.1:${await h.freePort()}` }), timeout: 5000 });
  check(r.status !== 0, 'the healthcheck fails with no gateway');
}

async function mutationFlow() {
  // `docker-compose exec gateway topobus token ...`: same environment.
  const tok = spawnSync(topobus, ['token', '--sub', 'ops', '--role', 'admin', '--ttl', '600'],
    { env: processEnv(state.gwSpec.env) });
  check(tok.status === 0, `token: ${tok.stderr}`);
  const token = tok.stdout.toString().trim();
  const base = state.base;

  const ready = await request(base, 'GET', '/readyz');
  check(ready.status === 200, `readyz ${ready.status} ${ready.body}`);
  const c = await request(base, 'POST', '/topologies', { token, body: { name: 'compose' } });
  check(c.status === 201, `create ${c.status} ${c.body}`);
  const id = c.json.id;
  const dep = await request(base, 'POST', `/topologies/${id}/deploy`, { token });
  check(dep.status === 202, `deploy ${dep.status} ${dep.body}`);
  // The mutator (another process) completes the deploy.
  await waitFor(async () => (await request(base, 'GET', `/topologies/${id}`, { token })).json.status === 'active',
    10000, 'status active after deploy');

  const s = new Stream(base, `/topologies/${id}/events?token=${token}`);
  await within(s.ready, 5000, 'stream open');
  check(s.status === 200, `stream ${s.status}`);
  await waitFor(() => s.events('snapshot').length >= 1, 5000, 'snapshot');
  const snap = s.events('snapshot')[0].json;
  check(snap.bus === 'up' && snap.status === 'active', `snapshot ${s.events('snapshot')[0].text}`);

  const m = await request(base, 'POST', `/topologies/${id}/mutations`,
    { token, body: { op: 'add_node', payload: { id: 'r1', kind: 'router' } } });
  check(m.status === 202, `enqueue ${m.status} ${m.body}`);
  const mid = m.json.mutation_id;
  const names = ['mutation.enqueued', 'mutation.applying', 'mutation.applied'];
  const of = (n) => s.events(n).find((f) => f.json && f.json.payload.mutation_id === mid);
  await waitFor(() => names.every(of), 10000, `${names.join(', ')} for ${mid}`);
  const order = s.frames.filter((f) => f.json && f.json.payload && f.json.payload.mutation_id === mid).map((f) => f.event);
  check(JSON.stringify(order) === JSON.stringify(names), `order: ${order}`);
  check(of('mutation.applied').json.payload.version === 1, `applied version ${of('mutation.applied').text}`);
  const doc = (await request(base, 'GET', `/topologies/${id}`, { token })).json;
  check(doc.status === 'active' && doc.version === 1 && doc.nodes.some((n) => n.id === 'r1'), `document ${JSON.stringify(doc)}`);
  s.close();
}

async function stopAll() {
  // SIGTERM as `docker-compose stop` sends it; clean exits (0).
  for (const name of ['gateway', 'mutator']) {
    const p = state[name];
    if (!p) continue;
    p.kill('SIGTERM');
    const r = await within(p.exited, 20000, `${name} exit`);
    state[name] = null;
    check(r.code === 0, `${name} exit ${r.code} ${r.signal}: ${r.stderr.slice(-2000)}`);
  }
}

h.runCases([
  ['nats, gateway and mutator start with the compose environment', startAll],
  ['the image HEALTHCHECK passes against the gateway', healthcheckPasses],
  ['create, deploy, stream, add_node: enqueued → applying → applied, status active', mutationFlow],
  ['gateway and mutator stop cleanly on SIGTERM', stopAll],
], async () => {
  for (const name of ['gateway', 'mutator', 'nats']) {
    const p = state[name];
    if (p && p.exitCode === null && p.signalCode === null) {
      p.kill(name === 'nats' ? 'SIGTERM' : 'SIGKILL');
      await within(p.exited, 10000, `${name} exit`).catch(() => {});
    }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});
