// The deploy files checked without running them: the Dockerfile's runtime
// packages against what the built binary links, its build stage against
// scripts/deps.sh, the compose file through docker-compose itself (no engine
// needed), the example .env against the compose file, and the systemd units
// through systemd-analyze. Usage: node deploy_static.js <topobus>
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./lib/harness');
const d = require('./lib/deploy');
const { check } = h;

const topobus = process.argv[2];

// Sanitizer runtimes appear only in the ASan/UBSan test build; the image
// builds the release preset, which links none of them.
const SANITIZER_RT = /^lib(asan|ubsan|lsan|tsan|hwasan)\.so/;

// Packages every debian:12-slim image holds (the image cannot run without them).
const BASE_IMAGE = ['libc6'];

// The image's init (CONTRACT §7): a runtime package that provides no library.
const INIT = { pkg: 'tini', path: '/usr/bin/tini' };

function lddAll(bin) {
  const libs = [];
  for (const line of execFileSync('ldd', [bin]).toString().split('\n')) {
    const arrow = /^\s*(\S+)\s+=>\s+(\/\S+)/.exec(line);
    const bare = /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (arrow) libs.push({ soname: arrow[1], file: arrow[2] });
    else if (bare) libs.push({ soname: path.basename(bare[1]), file: bare[1] });
    else if (/=>\s+not found/.test(line)) throw new Error(`ldd: ${line.trim()}`);
  }
  return libs;
}

// What ldd reports, less the sanitizer runtimes and what only they bring
// (libstdc++, libgcc_s): the binary's own NEEDED libraries and everything
// those load. In a release or debug build that is all of ldd's list.
function lddLibraries(bin) {
  const all = lddAll(bin);
  const own = all.filter((l) => !SANITIZER_RT.test(l.soname) && needed(bin).includes(l.soname));
  const keep = new Set(own.map((l) => l.soname));
  for (const l of own) for (const x of lddAll(l.file)) keep.add(x.soname);
  return all.filter((l) => keep.has(l.soname));
}

function needed(bin) {
  return execFileSync('readelf', ['-d', bin]).toString().split('\n')
    .map((l) => /\(NEEDED\)\s+Shared library: \[(.+)\]/.exec(l)).filter(Boolean).map((m) => m[1])
    .filter((s) => !SANITIZER_RT.test(s));
}

function runtimePackagesCoverLdd() {
  const stages = d.dockerfile();
  check(stages.length >= 2, 'a multi-stage Dockerfile');
  const runtime = stages[stages.length - 1];
  check(/^debian:12(-slim)?$/.test(runtime.from), `runtime on Debian 12: ${runtime.from}`);
  const listed = d.aptPackages(runtime);
  check(listed.length > 0, 'the runtime stage installs its libraries');
  const closure = d.dependencyClosure(listed);
  const direct = new Set(needed(topobus));
  const sanitized = lddAll(topobus).some((l) => SANITIZER_RT.test(l.soname));
  const used = new Set();
  const rows = [];
  for (const lib of lddLibraries(topobus)) {
    const pkg = d.packageOf(lib.file);
    check(pkg, `no Debian package owns ${lib.file}`);
    // The C library is in every Debian image, debian:12-slim included.
    const required = BASE_IMAGE.includes(pkg);
    const how = listed.includes(pkg) ? 'listed' : closure.has(pkg) ? 'dependency of a listed package'
      : required ? 'in the base image' : null;
    rows.push(`  ${lib.soname.padEnd(28)} ${pkg.padEnd(18)} ${how || 'MISSING'}`);
    check(how, `${lib.soname} (package ${pkg}) is not installed by the runtime stage`);
    // A sanitizer build links more directly (libcap, libm) than the release
    // build the image ships, so there only the coverage above applies.
    if (direct.has(lib.soname) && !sanitized) {
      check(listed.includes(pkg) || required, `${lib.soname} is linked directly: list ${pkg} itself`);
    }
    used.add(pkg);
  }
  console.log(`ldd ${path.basename(topobus)} → packages:\n${rows.join('\n')}`);
  for (const p of listed.filter((x) => x !== INIT.pkg)) {
    check(used.has(p), `runtime package ${p} provides no library the binary links`);
  }
}

function buildStageMatchesDeps() {
  const stages = d.dockerfile();
  const build = stages[0];
  check(/^debian:12\b/.test(build.from), `build on Debian 12: ${build.from}`);
  const runs = build.ins.filter((i) => i.op === 'RUN').map((i) => i.arg).join(' ');
  // The build stage installs with the README's own script, so the two cannot drift.
  check(/scripts\/deps\.sh run\b/.test(runs), 'the build stage runs scripts/deps.sh run');
  check(build.ins.some((i) => i.op === 'COPY' && /scripts\/deps\.sh/.test(i.arg)), 'deps.sh is copied in first');
  check(/cmake --preset release/.test(runs) && /cmake --build --preset release/.test(runs), 'release preset');
  check(/\bstrip\b/.test(runs), 'the binary is stripped');
  const runtime = stages[stages.length - 1];
  const user = runtime.ins.filter((i) => i.op === 'USER').pop();
  check(user && !/^(root|0)(:|$)/.test(user.arg), `runtime runs as a non-root user: ${user && user.arg}`);
  // An init reaps what an apply hook leaves behind: tini, installed from Debian, runs topobus.
  check(JSON.stringify(d.stageJson(runtime, 'ENTRYPOINT')) === JSON.stringify([INIT.path, '--', 'topobus']),
    `tini is the init and topobus the entrypoint: ${JSON.stringify(d.stageJson(runtime, 'ENTRYPOINT'))}`);
  check(d.aptPackages(runtime).includes(INIT.pkg), 'the runtime stage installs tini');
  const files = spawnSync('apt-file', ['list', INIT.pkg]);
  const owner = spawnSync('dpkg-query', ['-L', INIT.pkg]);
  const listing = `${files.stdout || ''}${owner.stdout || ''}`;
  if (listing) check(listing.includes(INIT.path), `package ${INIT.pkg} installs ${INIT.path}`);
  const hc = d.healthcheck(runtime);
  check(hc && hc.cmd && hc.cmd.join(' ').includes('/healthz'), 'HEALTHCHECK on /healthz');
}

function composeValidates() {
  const dc = d.which('docker-compose');
  check(dc, 'docker-compose installed');
  const file = path.join(d.deployDir, 'docker-compose.yml');
  const scale = path.join(d.deployDir, 'docker-compose.scale.yml');
  // Both files: without any .env (every variable has a default), and with the example.
  for (const f of [file, scale]) {
    for (const extra of [[], ['--env-file', path.join(d.deployDir, '.env.example')]]) {
      const r = spawnSync(dc, ['-f', f, ...extra, 'config', '-q'], { env: d.toolEnv() });
      check(r.status === 0, `docker-compose -f ${path.basename(f)} config -q ${extra.join(' ')}: ${r.stderr}`);
      check(!/WARN/i.test(r.stderr.toString()), `docker-compose warned: ${r.stderr}`);
    }
  }
  // The check itself catches a broken file.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-compose-'));
  try {
    const bad = path.join(tmp, 'docker-compose.yml');
    fs.writeFileSync(bad, fs.readFileSync(file, 'utf8').replace('restart: unless-stopped', 'restartt: unless-stopped'));
    const r = spawnSync(dc, ['-f', bad, 'config', '-q'], { env: d.toolEnv() });
    check(r.status !== 0, 'a misspelt key fails validation');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  const { config } = d.composeConfig(path.join(d.deployDir, '.env.example'));
  const s = config.services;
  check(s.nats && s.gateway && s.mutator, 'services nats, gateway, mutator');
  for (const [name, svc] of Object.entries(s)) check(svc.restart, `${name} has a restart policy`);
  check(s.nats.healthcheck && !String(s.nats.healthcheck.test).includes('NONE'), 'nats healthcheck');
  check((s.nats.volumes || []).some((v) => /^nats-data:/.test(v)), 'nats store on a volume');
  const natsConf = fs.readFileSync(path.join(d.deployDir, 'nats.conf'), 'utf8');
  check(/^\s*jetstream\s*[{:]/m.test(natsConf), 'JetStream on in nats.conf');
  for (const w of ['gateway', 'mutator']) {
    check(s[w].depends_on && s[w].depends_on.nats && s[w].depends_on.nats.condition === 'service_healthy',
      `${w} waits for a healthy nats`);
    check(s[w].environment.TOPOBUS_BUS === 'nats://nats:4222', `${w} bus`);
  }
  check(s.gateway.environment.TOPOBUS_DB === s.mutator.environment.TOPOBUS_DB, 'one store URL');
  const vol = (svc) => (svc.volumes || []).filter((v) => !v.startsWith('/')).map((v) => v.split(':').slice(0, 2).join(':'));
  check(vol(s.gateway).some((v) => vol(s.mutator).includes(v)), 'gateway and mutator share the store volume');
  check((s.gateway.ports || []).length === 1, 'gateway publishes its port');
  check((s.gateway.secrets || []).length === 1 && s.gateway.environment.TOPOBUS_JWT_SECRET_FILE, 'secret');
  check(!s.gateway.environment.TOPOBUS_JWT_SECRET, 'the secret is not in the environment');

  // The example .env and the compose files name the same variables.
  const composeText = fs.readFileSync(file, 'utf8') + fs.readFileSync(scale, 'utf8');
  const used = new Set([...composeText.matchAll(/\$\{([A-Z0-9_]+)(:?-[^}]*)?\}/g)].map((x) => x[1]));
  const example = fs.readFileSync(path.join(d.deployDir, '.env.example'), 'utf8');
  const defined = new Set([...example.matchAll(/^([A-Z0-9_]+)=/gm)].map((x) => x[1]));
  for (const v of used) check(defined.has(v), `.env.example lacks ${v}`);
  for (const v of defined) check(used.has(v), `.env.example sets ${v}, which no compose file uses`);
  scaleOut(dc, scale);
}

// docker-compose.scale.yml: PostgreSQL, three clustered NATS nodes, replicable gateways and
// mutators on both, and the nginx recipe in front with ip_hash (tickets are per gateway).
function scaleOut(dc, scale) {
  const r = spawnSync(dc, ['-f', scale, '--env-file', path.join(d.deployDir, '.env.example'), 'config'],
    { env: d.toolEnv() });
  check(r.status === 0, `docker-compose config: ${r.stderr}`);
  const y = spawnSync('/usr/bin/python3', ['-c', 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'],
    { input: r.stdout });
  const s = JSON.parse(y.stdout.toString()).services;
  for (const n of ['postgres', 'nats-1', 'nats-2', 'nats-3', 'gateway', 'mutator', 'proxy']) check(s[n], `service ${n}`);
  for (const w of ['gateway', 'mutator']) {
    const env = s[w].environment;
    check(env.TOPOBUS_BUS.split(',').length === 3, `${w} knows all three NATS nodes`);
    check(/^postgres:\/\//.test(env.TOPOBUS_DB), `${w} uses PostgreSQL`);
    check(env.TOPOBUS_NATS_REPLICAS === '3', `${w} asks for a replicated stream`);
    check(!s[w].ports, `${w} publishes no port, so it can be scaled`);
  }
  const conf = fs.readFileSync(path.join(d.deployDir, 'nginx', 'topobus.conf'), 'utf8');
  const cmd = [].concat(s.proxy.command).join(' ');
  const from = /sed 's\|([^|]+)\|([^|]+)\|'/.exec(cmd);
  check(from && conf.includes(from[1]), `the proxy rewrites a line deploy/nginx/topobus.conf has: ${from && from[1]}`);
  check(/ip_hash;/.test(from[2]) && /server gateway:8080;/.test(from[2]), `sticky upstream of gateway replicas: ${from[2]}`);
  const cluster = fs.readFileSync(path.join(d.deployDir, 'nats-cluster.conf'), 'utf8');
  for (const n of ['nats-1', 'nats-2', 'nats-3']) check(cluster.includes(`nats-route://${n}:6222`), `route to ${n}`);
  check(/^\s*jetstream\s*[{:]/m.test(cluster), 'JetStream on in the cluster');
}

function systemdUnits() {
  const dir = path.join(d.deployDir, 'systemd');
  const units = ['topobus-gateway.service', 'topobus-mutator.service'];
  const want = ['DynamicUser=yes', 'StateDirectory=topobus', 'ProtectSystem=strict', 'ProtectHome=yes',
    'NoNewPrivileges=yes', 'PrivateTmp=yes', 'Restart=on-failure', 'EnvironmentFile=/etc/topobus/topobus.env',
    'User=topobus'];
  for (const u of units) {
    const text = fs.readFileSync(path.join(dir, u), 'utf8');
    const lines = text.split('\n').map((l) => l.trim());
    for (const w of want) check(lines.includes(w), `${u}: ${w}`);
    const exec = lines.find((l) => l.startsWith('ExecStart='));
    check(exec && exec.includes(u.includes('gateway') ? ' gateway ' : ' mutator ') && exec.includes('%S/topobus/'),
      `${u}: ExecStart runs the role with its store in the state directory: ${exec}`);
  }
  const env = fs.readFileSync(path.join(dir, 'topobus.env.example'), 'utf8');
  check(/^TOPOBUS_JWT_SECRET=/m.test(env), 'the env file carries the secret');

  const sa = d.which('systemd-analyze');
  check(sa, 'systemd-analyze is installed (package systemd)');
  // verify needs ExecStart's binary and the EnvironmentFile to exist: copies
  // of the units point at the built binary and an empty env file instead.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-units-'));
  try {
    fs.writeFileSync(path.join(tmp, 'topobus.env'), '');
    const copies = units.map((u) => {
      const p = path.join(tmp, u);
      const text = fs.readFileSync(path.join(dir, u), 'utf8')
        .replace(/\/usr\/local\/bin\/topobus/g, path.resolve(topobus))
        .replace(/\/etc\/topobus\/topobus\.env/g, path.join(tmp, 'topobus.env'));
      fs.writeFileSync(p, text);
      return p;
    });
    const r = spawnSync(sa, ['verify', ...copies], { env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } });
    // Unknown keys are only warnings to verify: any output at all fails.
    const out = `${r.stdout}${r.stderr}`.trim();
    check(r.status === 0 && out === '', `systemd-analyze verify: rc ${r.status}: ${out}`);
    for (const p of copies) {
      const s = spawnSync(sa, ['security', '--offline=yes', '--no-pager', p], { env: { ...process.env, SYSTEMD_COLORS: '0' } });
      const m = /Overall exposure level for \S+: ([\d.]+)/.exec(`${s.stdout}`);
      check(m, `systemd-analyze security: ${s.stdout}${s.stderr}`);
      console.log(`  ${path.basename(p)}: systemd-analyze security exposure ${m[1]}`);
      check(Number(m[1]) <= 2.0, `${path.basename(p)} exposure ${m[1]} > 2.0`);
    }
    // And a broken copy is caught, so the check is not vacuous.
    const bad = path.join(tmp, 'bad.service');
    fs.writeFileSync(bad, fs.readFileSync(copies[0], 'utf8').replace('ProtectHome=yes', 'ProtectHome=yes\nProtectHomee=yes'));
    const rb = spawnSync(sa, ['verify', bad]);
    check(`${rb.stdout}${rb.stderr}`.includes('ProtectHomee'), 'a misspelt key is reported');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

h.runCases([
  ['runtime packages cover every library ldd reports', runtimePackagesCoverLdd],
  ['build stage: deps.sh run packages, release preset, strip, non-root, entrypoint, healthcheck', buildStageMatchesDeps],
  ['docker-compose config -q validates; services, volumes, secret, .env.example in step', composeValidates],
  ['systemd units: hardening directives, systemd-analyze verify and security', systemdUnits],
]);
