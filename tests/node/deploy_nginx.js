// deploy/nginx/topobus.conf in front of a real gateway: Debian's nginx runs
// as a child (daemon off, a temp prefix, started and stopped by PID) with a
// config made from that file, changing only the upstream address, the listen
// port and the log path. The http {} around it turns gzip on for event
// streams, as a careless main config would, so the file's own directives
// must keep the stream uncompressed. Checks: the snapshot reaches `curl -N`
// at once, publish→receive latency through nginx stays within a few ms of
// direct, keepalives pass while a stream idles, the access log never holds
// the token, /metrics is not proxied. A control copy without the file's
// `proxy_buffering off` and `gzip off` (and ignoring the gateway's
// X-Accel-Buffering header) shows these checks would catch a buffering proxy.
// Usage: node deploy_nginx.js <topobus>
'use strict';
const { performance } = require('perf_hooks');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const h = require('./lib/harness');
const d = require('./lib/deploy');
const { check, request, Stream, waitFor, within } = h;

const topobus = process.argv[2];
const EVENTS = 60;
const state = { nginx: [] };

// The deploy file with only its upstream address, listen port and log
// directory substituted; each must match exactly once.
function siteConfig(gwPort, port, dir, edit = (s) => s) {
  let conf = fs.readFileSync(path.join(d.deployDir, 'nginx', 'topobus.conf'), 'utf8');
  const sub = (re, to, what) => {
    const n = (conf.match(new RegExp(re.source, 'g')) || []).length;
    check(n === 1, `topobus.conf: ${n} ${what}, expected one`);
    conf = conf.replace(re, to);
  };
  sub(/server\s+127\.0\.0\.1:8080;/, `server 127.0.0.1:${gwPort};`, 'upstream server lines');
  sub(/listen\s+80;/, `listen 127.0.0.1:${port};`, 'listen lines');
  sub(/access_log\s+\/var\/log\/nginx\//, `access_log ${dir}/`, 'access logs under /var/log/nginx');
  return edit(conf);
}

async function startNginx(name, gwPort, edit) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tb-nginx-${name}-`));
  fs.chmodSync(dir, 0o755); // workers run as nobody when nginx starts as root
  const port = await h.freePort();
  fs.writeFileSync(path.join(dir, 'topobus.conf'), siteConfig(gwPort, port, dir, edit));
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
    default_type application/octet-stream;
    access_log ${dir}/default.access.log;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    # A main config that compresses everything, event streams included.
    gzip on;
    gzip_proxied any;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
    include ${dir}/topobus.conf;
}
`);
  const nginx = h.which('nginx');
  const args = ['-e', `${dir}/error.log`, '-p', `${dir}/`, '-c', `${dir}/nginx.conf`];
  const t = h.run(nginx, [...args, '-t', '-q']);
  const tr = await within(t.exited, 10000, 'nginx -t');
  check(tr.code === 0, `nginx -t: ${tr.stderr}`);
  const proc = h.run(nginx, args);
  const n = { name, dir, port, proc, base: `http://127.0.0.1:${port}` };
  state.nginx.push(n);
  await h.waitPort(port, 10000).catch((e) => { throw new Error(`${e.message}: ${proc.out.stderr}`); });
  return n;
}

async function stopNginx(n) {
  if (n.proc) {
    n.proc.kill('SIGTERM'); // fast shutdown: open streams are cut
    const r = await within(n.proc.exited, 10000, 'nginx exit');
    n.proc = null;
    check(r.code === 0, `nginx exit ${r.code} ${r.signal}: ${r.stderr}`);
  }
}

// A Stream whose frames also carry a high-resolution arrival time.
class TimedStream extends Stream {
  parse(block) {
    const before = this.frames.length;
    super.parse(block);
    if (this.frames.length > before) this.frames[this.frames.length - 1].hr = performance.now();
  }
}

async function openStream(base, p, headers) {
  const s = new TimedStream(base, p, headers);
  await within(s.ready, 5000, `stream ${base}`);
  check(s.status === 200, `stream status ${s.status}`);
  await waitFor(() => s.events('snapshot').length >= 1, 5000, `snapshot via ${base}`);
  return s;
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const pct = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };

async function setup() {
  const gw = new h.Gateway(topobus, { keepalive: 1, drain: 0 });
  state.gw = gw;
  await gw.start();
  gw.tok = gw.token('viewer-1', 'editor,viewer,publisher');
  const r = await request(gw.base, 'POST', '/topologies', { token: gw.tok, body: { name: 'proxy' } });
  check(r.status === 201, `create ${r.status}`);
  gw.id = r.json.id;
  gw.events = `/topologies/${gw.id}/events?token=${gw.tok}`;
  state.ng = await startNginx('site', gw.port);
}

async function curlGetsSnapshotAtOnce() {
  const { gw, ng } = state;
  const t0 = performance.now();
  const curl = h.run(h.which('curl'), ['-N', '-s', '-D', '-', '-H', 'Accept-Encoding: gzip', `${ng.base}${gw.events}`]);
  try {
    await waitFor(() => /\nevent: snapshot\n/.test(curl.out.stdout), 3000, `snapshot through nginx: ${curl.out.stdout}`);
    const ms = performance.now() - t0;
    const head = curl.out.stdout.split('\r\n\r\n')[0];
    console.log(`  curl -N through nginx: snapshot after ${ms.toFixed(1)} ms`);
    check(/^HTTP\/1\.1 200/.test(head), `status line: ${head}`);
    check(/\r\ncontent-type: text\/event-stream/i.test(head), `content type: ${head}`);
    check(!/\r\ncontent-encoding:/i.test(head), `the stream is not compressed: ${head}`);
    check(ms < 1000, `snapshot took ${ms} ms`);
  } finally {
    curl.kill('SIGTERM');
    await within(curl.exited, 5000, 'curl exit');
  }
}

// Publishes EVENTS events one at a time (paced, so none share a write) and
// returns per-event receive latencies on each stream.
async function measure(streams) {
  const { gw } = state;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const sent = [];
  for (let i = 0; i < EVENTS; i++) {
    sent[i] = performance.now();
    await new Promise((resolve, reject) => {
      const body = JSON.stringify({ topic: `topology.${gw.id}.probe`, payload: { i } });
      const req = http.request(`${gw.base}/publish`, { method: 'POST', agent,
        headers: { authorization: `Bearer ${gw.tok}`, 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 202 ? resolve() : reject(new Error(`publish ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
    await new Promise((r) => setTimeout(r, 15));
  }
  agent.destroy();
  const lat = [];
  for (const s of streams) {
    await waitFor(() => s.events('probe').length >= EVENTS, 5000, `${EVENTS} events on a stream`).catch(() => {});
    const got = new Map(s.events('probe').map((f) => [f.json.payload.i, f.hr]));
    lat.push(sent.map((t, i) => (got.has(i) ? got.get(i) - t : Infinity)));
  }
  return lat;
}

async function latencyDirectVsNginx() {
  const { gw, ng } = state;
  const direct = await openStream(gw.base, gw.events);
  const proxied = await openStream(ng.base, gw.events, { 'accept-encoding': 'gzip' });
  check(!proxied.headers['content-encoding'], 'no gzip on the stream through nginx');
  check(proxied.headers['x-accel-buffering'] === undefined, 'nginx consumes X-Accel-Buffering');
  const [ld, ln] = await measure([direct, proxied]);
  check(ld.every(Number.isFinite) && ln.every(Number.isFinite), 'every event arrived on both streams');
  const diff = ln.map((x, i) => x - ld[i]);
  const fmt = (a) => `median ${median(a).toFixed(2)} ms, p90 ${pct(a, 0.9).toFixed(2)} ms, max ${Math.max(...a).toFixed(2)} ms`;
  console.log(`  publish→receive over ${EVENTS} events\n    direct:       ${fmt(ld)}\n    through nginx: ${fmt(ln)}\n    difference:   ${fmt(diff)}`);
  check(median(diff) < 3, `nginx adds ${median(diff)} ms at the median`);
  check(pct(diff, 0.9) < 10, `nginx adds ${pct(diff, 0.9)} ms at p90`);
  state.direct = direct;
  state.proxied = proxied;
}

async function idleStreamKeepsAlive() {
  const { proxied, direct } = state;
  // The gateway sends `: keepalive` after 1 s of silence: through nginx each
  // must arrive as it is sent, and nginx must not close the idle stream.
  const from = Date.now();
  await waitFor(() => proxied.comments.filter((c) => c.at > from).length >= 3, 6000, 'three keepalives through nginx');
  const ka = proxied.comments.filter((c) => c.at > from && c.text === 'keepalive').map((c) => c.at);
  check(ka.length >= 3, `keepalive comments: ${JSON.stringify(proxied.comments.slice(-5))}`);
  const gaps = ka.slice(1).map((t, i) => t - ka[i]);
  check(gaps.every((g) => g > 500 && g < 2000), `keepalives arrive one by one, about 1 s apart: ${gaps}`);
  check(!proxied.closed && !direct.closed, 'nginx keeps the idle stream open');
  // The idle timeout in the file is far above any keepalive interval.
  const conf = fs.readFileSync(path.join(d.deployDir, 'nginx', 'topobus.conf'), 'utf8');
  const m = /location ~ \^\/topologies[^{]*\{[^}]*proxy_read_timeout\s+(\d+)([smh]?);/.exec(conf);
  check(m, 'proxy_read_timeout in the events location');
  const secs = Number(m[1]) * ({ s: 1, m: 60, h: 3600 }[m[2] || 's']);
  check(secs >= 4 * 15, `proxy_read_timeout ${secs} s vs the default 15 s keepalive`);
  proxied.close();
  direct.close();
}

async function logsAndMetrics() {
  const { gw, ng } = state;
  const r = await request(ng.base, 'GET', '/metrics');
  check(r.status === 404, `/metrics through nginx: ${r.status}`);
  check((await request(gw.base, 'GET', '/metrics')).status === 200, '/metrics directly');
  const api = await request(ng.base, 'GET', `/topologies/${gw.id}`, { token: gw.tok });
  check(api.status === 200 && api.json.id === gw.id, `API through nginx: ${api.status}`);
  const log = path.join(ng.dir, 'topobus.access.log');
  await waitFor(() => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('/events'), 3000, 'access log lines');
  const text = fs.readFileSync(log, 'utf8');
  check(!text.includes(gw.tok) && !text.includes('token='), `the access log holds no token:\n${text}`);
}

// Control: the same file with `proxy_buffering off;` and `gzip off;` dropped
// and the gateway's X-Accel-Buffering: no ignored. An event must then be held
// back (nginx's gzip and proxy buffers), which the checks above would catch.
async function bufferingControlIsDetected() {
  const { gw } = state;
  const ng = await startNginx('control', gw.port, (conf) => {
    check(conf.includes('proxy_buffering off;'), 'the file turns proxy buffering off');
    return conf.replace(/proxy_buffering off;/, 'proxy_ignore_headers X-Accel-Buffering;')
      .replace(/gzip off;/, '');
  });
  try {
    const direct = await openStream(gw.base, gw.events);
    // Not even the headers come through before the buffers fill, so the
    // stream is not awaited here.
    const s = new TimedStream(ng.base, gw.events, { 'accept-encoding': 'gzip' });
    s.ready.catch(() => {});
    await new Promise((r) => setTimeout(r, 300));
    await request(gw.base, 'POST', '/publish', { token: gw.tok, body: { topic: `topology.${gw.id}.probe`, payload: { i: -1 } } });
    await waitFor(() => direct.events('probe').length >= 1, 2000, 'control event directly');
    await new Promise((r) => setTimeout(r, 500));
    console.log(`  control (buffering, gzip): status ${s.status || 'none yet'}, ${s.raw.length} bytes, ` +
      `${s.events('probe').length} events 500 ms after the direct stream had the event`);
    check(s.events('probe').length === 0, 'a buffering proxy holds the event back');
    s.close();
    direct.close();
  } finally {
    await stopNginx(ng);
  }
}

h.runCases([
  ['nginx with deploy/nginx/topobus.conf in front of a gateway', setup],
  ['curl -N through nginx gets the snapshot at once, uncompressed', curlGetsSnapshotAtOnce],
  ['publish→receive latency through nginx within a few ms of direct', latencyDirectVsNginx],
  ['an idle stream gets its keepalives through nginx and stays open', idleStreamKeepsAlive],
  ['the access log holds no token; /metrics is not proxied', logsAndMetrics],
  ['a buffering control config is caught', bufferingControlIsDetected],
  ['nginx stops on SIGTERM', () => stopNginx(state.ng)],
], async () => {
  for (const n of state.nginx) {
    if (n.proc) { n.proc.kill('SIGKILL'); await within(n.proc.exited, 5000, 'nginx exit').catch(() => {}); }
    fs.rmSync(n.dir, { recursive: true, force: true });
  }
  if (state.gw) { await state.gw.stop().catch(() => {}); state.gw.cleanup(); }
});
