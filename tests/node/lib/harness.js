// Shared pieces of the Node integration tests: real processes started and
// stopped by PID, free loopback ports, bounded waits, the gateway and
// nats-server as children, HTTP requests and a raw SSE reader. Every wait
// has a deadline; every child is killed when the test ends.
'use strict';
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');

const children = new Set();
const exitHooks = [];

// Whatever ends the test (a failed check, an exception, a crash in a callback), every
// child is killed and every registered cleanup runs: nothing a test started outlives it.
function onExit(fn) { exitHooks.push(fn); }
function cleanupAtExit() {
  for (const c of children) { try { c.kill('SIGKILL'); } catch (e) { /* gone */ } }
  for (const fn of exitHooks.splice(0)) { try { fn(); } catch (e) { /* best effort */ } }
}
process.on('exit', cleanupAtExit);
process.on('uncaughtException', (e) => { console.error(e.stack || String(e)); process.exit(1); });
process.on('unhandledRejection', (e) => { console.error((e && e.stack) || String(e)); process.exit(1); });

function which(name) {
  const dirs = (process.env.PATH || '').split(':').concat(['/usr/sbin', '/usr/local/sbin', '/usr/bin']);
  for (const d of dirs) {
    const p = path.join(d, name);
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch (e) { /* next */ }
  }
  throw new Error(`${name} is not installed: run scripts/deps.sh test`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

function waitPort(port, ms) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve(); });
      s.on('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`port ${port} never accepted`));
        else setTimeout(attempt, 20);
      });
    };
    attempt();
  });
}

// Starts a child; `exited` resolves with {code, signal, stdout, stderr}.
function run(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env || process.env });
  children.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d) => { out.stdout += d; });
  child.stderr.on('data', (d) => { out.stderr += d; });
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal, ...out });
  }));
  child.out = out;
  return child;
}

function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function check(cond, msg) { if (!cond) throw new Error(`check failed: ${msg}`); }

function killAll() {
  for (const c of children) c.kill('SIGKILL');
}

// A nats-server on a free port (same port and store on restart).
class Nats {
  constructor(jetstream) {
    this.jetstream = jetstream;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-nats-'));
    onExit(() => fs.rmSync(this.dir, { recursive: true, force: true }));
  }
  // Picks the port (and URL) without starting, so a client can be pointed at a server not yet up.
  async reserve() {
    this.port = this.port || await freePort();
    this.url = `nats://127.0.0.1:${this.port}`;
  }
  async start(port) {
    if (port) this.port = port;
    await this.reserve();
    const args = ['-a', '127.0.0.1', '-p', String(this.port)];
    if (this.jetstream) args.push('-js', '-sd', this.dir);
    this.proc = run(which('nats-server'), args);
    await waitPort(this.port, 10000);
  }
  async kill(sig = 'SIGKILL') {
    if (!this.proc) return;
    this.proc.kill(sig);
    await within(this.proc.exited, 10000, 'nats-server exit');
    this.proc = null;
  }
  async stop() {
    await this.kill('SIGTERM');
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// `topobus gateway` (or serve) as a child, on a free port, with its own SQLite file.
class Gateway {
  constructor(topobus, opts = {}) {
    this.topobus = topobus;
    this.opts = opts;
    this.dir = opts.dir || fs.mkdtempSync(path.join(os.tmpdir(), 'tb-gw-'));
    if (!opts.dir) onExit(() => fs.rmSync(this.dir, { recursive: true, force: true }));
    this.secret = opts.secret || 'test-secret-0123456789abcdef0123456789';
  }
  env(extra = {}) {
    return { ...process.env, TOPOBUS_JWT_SECRET: this.secret, TOPOBUS_LOG: 'info', ...this.opts.env, ...extra };
  }
  async start() {
    this.port = this.port || await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    const args = [this.opts.command || 'gateway', '--listen', `127.0.0.1:${this.port}`,
      '--db', this.opts.db || `sqlite:${path.join(this.dir, 'topobus.db')}`, '--bus', this.opts.bus || 'mem://',
      '--keepalive', String(this.opts.keepalive || 1), '--drain', String(this.opts.drain ?? 1),
      '--loops', String(this.opts.loops || 2), ...(this.opts.args || [])];
    this.proc = run(this.topobus, args, { env: this.env() });
    await waitPort(this.port, 15000);
  }
  get log() { return this.proc ? this.proc.out.stderr : this.lastLog; }
  async stop(sig = 'SIGTERM') {
    if (!this.proc) return null;
    this.proc.kill(sig);
    const r = await within(this.proc.exited, 20000, 'gateway exit');
    this.lastLog = r.stderr;
    this.proc = null;
    return r;
  }
  token(sub, role, ttl = 600) {
    return execFileSync(this.topobus, ['token', '--sub', sub, '--role', role, '--ttl', String(ttl)],
      { env: this.env() }).toString().trim();
  }
  cleanup() { fs.rmSync(this.dir, { recursive: true, force: true }); }
}

// One HTTP request; resolves {status, headers, body, json}.
function request(base, method, p, { token, body, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(p, base);
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    const data = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    if (data) { h['content-type'] = 'application/json'; h['content-length'] = data.length; }
    const req = http.request(u, { method, headers: h, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try { json = JSON.parse(text); } catch (e) { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error(`${method} ${p} timed out`)));
    if (data) req.write(data);
    req.end();
  });
}

// A raw SSE reader over node's http: keeps every frame (parsed per the
// event-stream rules) and every comment, in arrival order with timestamps.
class Stream {
  constructor(base, p, headers = {}) {
    this.frames = [];
    this.comments = [];
    this.raw = '';
    this.closed = false;
    this.ready = new Promise((resolve, reject) => {
      this.req = http.get(new URL(p, base), { headers, agent: false }, (res) => {
        this.status = res.statusCode;
        this.headers = res.headers;
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk) => {
          this.raw += chunk;
          buf += chunk;
          let i;
          while ((i = buf.search(/\r\n\r\n|\n\n|\r\r/)) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + (buf.startsWith('\r\n\r\n', i) ? 4 : 2));
            this.parse(block);
          }
        });
        res.on('end', () => { this.closed = true; this.closedAt = Date.now(); });
        res.on('error', () => { this.closed = true; this.closedAt = Date.now(); });
        resolve(this);
      });
      this.req.on('error', (e) => { this.closed = true; this.closedAt = Date.now(); reject(e); });
    });
  }
  parse(block) {
    const frame = { data: [], at: Date.now() };
    let hasField = false;
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (line.startsWith(':')) { this.comments.push({ text: line.slice(1).trim(), at: Date.now() }); continue; }
      const c = line.indexOf(':');
      const name = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      hasField = true;
      if (name === 'data') frame.data.push(value);
      else frame[name] = value;
    }
    if (frame.retry !== undefined) this.retry = Number(frame.retry);
    // As in the event-stream rules, only a block with data dispatches an event.
    if (!hasField || frame.data.length === 0) return;
    frame.text = frame.data.join('\n');
    try { frame.json = JSON.parse(frame.text); } catch (e) { frame.json = undefined; }
    this.frames.push(frame);
  }
  events(name) { return this.frames.filter((f) => f.event === name); }
  close() { this.req.destroy(); }
}

// Process CPU time (utime + stime, in clock ticks) from /proc.
function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

function rssKb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

// Runs named async cases in order, printing one line each; exits non-zero on the first failure.
async function runCases(cases, cleanup) {
  let failed = false;
  try {
    for (const [name, fn] of cases) {
      const t0 = Date.now();
      await fn();
      console.log(`ok: ${name} (${Date.now() - t0} ms)`);
    }
  } catch (e) {
    failed = true;
    console.error(e.stack || String(e));
    // What the processes still running said last: the first thing to read on a failure.
    for (const c of children) {
      const tail = (c.out.stderr || '').split('\n').slice(-25).join('\n');
      console.error(`--- ${c.spawnargs.slice(0, 2).join(' ')} (pid ${c.pid}), last stderr lines:\n${tail}`);
    }
  } finally {
    try { if (cleanup) await cleanup(); } catch (e) { console.error(e.stack || String(e)); failed = true; }
    killAll();
  }
  process.exit(failed ? 1 : 0);
}

module.exports = {
  which, freePort, waitPort, run, within, waitFor, check, killAll, Nats, Gateway, request, Stream,
  cpuTicks, rssKb, runCases, children, onExit,
};
