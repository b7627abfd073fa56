// Tokens from a JWT library nobody here wrote (npm `jsonwebtoken`) against a
// real `topobus gateway`: HS256 tokens it signs are accepted (roles as an
// array or a string), `alg: none`, a wrong key, HS384 with the right secret,
// an expired and a not-yet-valid token are refused with 401, and a token
// minted by `topobus token` verifies in jsonwebtoken. The gateway exits 0 on
// SIGTERM and its log holds none of the tokens.
// Usage: node jwt_interop.js <path to topobus>
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const jwt = require('jsonwebtoken');
const { run, within, waitFor, check, children } = require('./lib/harness');

const topobus = process.argv[2];
const secret = 'node-interop-secret-0123456789abcdef';

const env = { ...process.env, TOPOBUS_JWT_SECRET: secret, TOPOBUS_JWT_SECRET_FILE: '', TOPOBUS_JWT_PUBLIC_KEY_FILE: '' };

async function status(base, method, route, token, body) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  if (body) headers['content-type'] = 'application/json';
  const res = await fetch(base + route, { method, headers, body, signal: AbortSignal.timeout(5000) });
  await res.arrayBuffer();
  return res.status;
}

function b64url(obj) { return Buffer.from(JSON.stringify(obj)).toString('base64url'); }

async function tokensFromJsonwebtoken(base, used) {
  const now = Math.floor(Date.now() / 1000);
  const sign = (claims, key, opts) => { const t = jwt.sign(claims, key, opts); used.push(t); return t; };
  const good = sign({ sub: 'node', roles: ['viewer', 'editor'] }, secret, { algorithm: 'HS256', expiresIn: 300 });
  check(await status(base, 'GET', '/topologies', good) === 200, 'HS256 token from jsonwebtoken accepted');
  check(await status(base, 'POST', '/topologies', good, '{"name":"from node"}') === 201, 'editor role read');
  const single = sign({ sub: 'node', role: 'viewer' }, secret, { algorithm: 'HS256', expiresIn: 300 });
  check(await status(base, 'GET', '/topologies', single) === 200, '`role` as a string');
  check(await status(base, 'POST', '/topologies', single, '{"name":"x"}') === 403, 'viewer cannot create');
  const claims = { sub: 'node', roles: ['viewer'], exp: now + 300 };
  const none = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`;
  const noneWithSig = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.${good.split('.')[2]}`;
  used.push(none, noneWithSig);
  const refused = {
    'alg none': none,
    'alg none with a copied signature': noneWithSig,
    'a wrong key': sign(claims, 'another-secret-another-secret-xx', { algorithm: 'HS256' }),
    'HS384 with the same secret': sign(claims, secret, { algorithm: 'HS384' }),
    'expired': sign({ sub: 'node', roles: ['viewer'], exp: now - 10 }, secret, { algorithm: 'HS256' }),
    'not yet valid': sign({ sub: 'node', roles: ['viewer'], exp: now + 300, nbf: now + 120 }, secret, { algorithm: 'HS256' }),
    'no sub': sign({ roles: ['viewer'], exp: now + 300 }, secret, { algorithm: 'HS256' }),
    'a tampered payload': `${good.split('.')[0]}.${b64url({ ...claims, roles: ['admin'] })}.${good.split('.')[2]}`,
  };
  for (const [what, token] of Object.entries(refused)) {
    used.push(token);
    const got = await status(base, 'GET', '/topologies', token);
    check(got === 401, `${what}: expected 401, got ${got}`);
  }
}

async function tokenFromTopobus(used) {
  const t = run(topobus, ['token', '--sub', 'carol', '--role', 'viewer,publisher', '--ttl', '120'], { env });
  const r = await within(t.exited, 10000, 'topobus token');
  check(r.code === 0, `topobus token exit ${r.code}: ${r.stderr}`);
  const token = r.stdout.trim();
  used.push(token);
  const claims = jwt.verify(token, secret, { algorithms: ['HS256'] });
  check(claims.sub === 'carol', `sub ${claims.sub}`);
  const roles = claims.roles || [claims.role];
  check(roles.includes('viewer') && roles.includes('publisher'), `roles ${JSON.stringify(claims)}`);
  check(claims.exp - Math.floor(Date.now() / 1000) <= 120 && claims.exp > Date.now() / 1000, `exp ${claims.exp}`);
  let rejected = false;
  try { jwt.verify(token, 'not-the-secret', { algorithms: ['HS256'] }); } catch (e) { rejected = true; }
  check(rejected, 'jsonwebtoken rejects it under another key');
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-jwt-'));
  const gw = run(topobus, ['gateway', '--listen', '127.0.0.1:0', '--bus', 'none', '--loops', '1',
    '--db', `sqlite:${path.join(dir, 'gw.db')}`], { env });
  const used = [];
  try {
    await waitFor(() => gw.out.stderr.includes('serving on '), 15000, 'gateway serving');
    const first = gw.out.stderr.split('\n')[0];
    const m = /listening on (127\.0\.0\.1:\d+)/.exec(first);
    check(m, `first log line names the address: ${first}`);
    const base = `http://${m[1]}`;
    await tokensFromJsonwebtoken(base, used);
    console.log('ok: jsonwebtoken HS256 tokens accepted; none, wrong key, HS384, expired, nbf, no sub, tampered refused');
    await tokenFromTopobus(used);
    console.log('ok: a topobus token verifies in jsonwebtoken');
    gw.kill('SIGTERM');
    const r = await within(gw.exited, 15000, 'gateway exit on SIGTERM');
    check(r.code === 0, `gateway exit code ${r.code} ${r.signal}`);
    for (const t of used) {
      const sig = t.split('.')[2] || t;
      check(!r.stderr.includes(sig) && !r.stdout.includes(sig), 'no token in the gateway log');
    }
    console.log('ok: the gateway exited 0 and logged no token');
  } finally {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (e) => { console.error(e.stack || String(e)); process.exit(1); });
