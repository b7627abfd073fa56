// Readers for the files under deploy/, shared by the deploy tests: the
// Dockerfile (stages, ENV, package lists, HEALTHCHECK), the compose file as
// docker-compose itself normalizes it, and the Debian package of a library.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..', '..', '..');
const deployDir = path.join(root, 'deploy');

// The environment the deploy tools run with: PATH and HOME only, so a
// TOPOBUS_* variable of whoever runs the tests cannot leak into compose's
// ${VAR} substitutions (the shell environment beats .env there).
function toolEnv() {
  return { PATH: process.env.PATH || '/usr/bin:/bin', HOME: process.env.HOME || '/root' };
}

// Dockerfile instructions per stage, with comments dropped and line
// continuations joined as docker does.
function dockerfile(file = path.join(deployDir, 'Dockerfile')) {
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => !/^\s*#/.test(l));
  const joined = lines.join('\n').replace(/\\\n/g, ' ');
  const stages = [];
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const ins = { op: m[1].toUpperCase(), arg: m[2].trim() };
    if (ins.op === 'FROM') stages.push({ from: ins.arg, ins: [] });
    else if (stages.length) stages[stages.length - 1].ins.push(ins);
  }
  return stages;
}

// Packages named by `apt-get install` in a stage's RUN instructions.
function aptPackages(stage) {
  const pkgs = [];
  for (const i of stage.ins.filter((x) => x.op === 'RUN')) {
    for (const part of i.arg.split(/&&|;/)) {
      const words = part.trim().split(/\s+/);
      const at = words.indexOf('install');
      if (words[0] !== 'apt-get' || at < 0) continue;
      pkgs.push(...words.slice(at + 1).filter((w) => w && !w.startsWith('-')));
    }
  }
  return pkgs;
}

// ENV of a stage as an object (`ENV K=V` per instruction, values unquoted).
function stageEnv(stage) {
  const env = {};
  for (const i of stage.ins.filter((x) => x.op === 'ENV')) {
    for (const m of i.arg.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("([^"]*)"|\S*)/g)) env[m[1]] = m[3] ?? m[2];
  }
  return env;
}

function stageJson(stage, op) {
  const i = stage.ins.filter((x) => x.op === op).pop();
  return i ? JSON.parse(i.arg) : null;
}

// The exec form of HEALTHCHECK ... CMD [..].
function healthcheck(stage) {
  const i = stage.ins.filter((x) => x.op === 'HEALTHCHECK').pop();
  if (!i) return null;
  const m = /\bCMD\s+(\[.*\])\s*$/.exec(i.arg);
  return { options: i.arg, cmd: m ? JSON.parse(m[1]) : null };
}

function which(name) {
  for (const d of (process.env.PATH || '').split(':').concat(['/usr/bin', '/usr/sbin', '/bin'])) {
    const p = path.join(d, name);
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch (e) { /* next */ }
  }
  return null;
}

// `docker-compose -f deploy/docker-compose.yml [--env-file F] config`: the
// normalized YAML (substitutions done, paths absolute), and the same as an
// object. Node has no YAML parser in our dependencies; docker-compose is
// written in Python on PyYAML (python3-yaml, one of its Debian dependencies),
// so Debian's /usr/bin/python3 turns the normalized YAML into JSON with the
// very parser compose used.
function composeConfig(envFile) {
  const dc = which('docker-compose');
  if (!dc) throw new Error('docker-compose is not installed: run scripts/deps.sh test');
  const args = ['-f', path.join(deployDir, 'docker-compose.yml')];
  if (envFile) args.push('--env-file', envFile);
  const yaml = execFileSync(dc, [...args, 'config'], { env: toolEnv(), stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  const json = execFileSync('/usr/bin/python3', ['-c',
    'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: yaml }).toString();
  return { yaml, config: JSON.parse(json) };
}

function sh(cmd, args) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    return null;
  }
}

// The installed Debian package owning a library path. Debian 12 is
// /usr-merged but dpkg records some files under /lib and others under
// /usr/lib, so both spellings of the path and of its target are tried.
function packageOf(file) {
  const cands = new Set();
  for (const p of [file, fs.realpathSync(file)]) {
    cands.add(p);
    if (p.startsWith('/usr/')) cands.add(p.slice(4));
    else cands.add(`/usr${p}`);
  }
  for (const c of cands) {
    const out = sh('dpkg-query', ['-S', c]);
    if (out) return out.split('\n')[0].split(':')[0].trim();
  }
  return null;
}

function pkgField(pkg, field) {
  return sh('dpkg-query', ['-W', `-f=\${${field}}`, pkg]);
}

function installed(pkg) {
  return /install ok installed/.test(pkgField(pkg, 'Status') || '');
}

// Every installed package a package pulls in through Depends/Pre-Depends.
function dependencyClosure(pkgs) {
  const seen = new Set();
  const unvisited = [...pkgs];
  while (unvisited.length) {
    const p = unvisited.pop();
    if (seen.has(p)) continue;
    seen.add(p);
    const deps = `${pkgField(p, 'Depends') || ''},${pkgField(p, 'Pre-Depends') || ''}`;
    for (const clause of deps.split(',')) {
      const alts = clause.split('|').map((a) => a.trim().split(/[\s(:]/)[0]).filter(Boolean);
      const pick = alts.find(installed);
      if (pick && !seen.has(pick)) unvisited.push(pick);
    }
  }
  return seen;
}

module.exports = {
  root, deployDir, toolEnv, dockerfile, aptPackages, stageEnv, stageJson, healthcheck, which,
  composeConfig, packageOf, pkgField, dependencyClosure,
};
