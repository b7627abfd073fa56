// Real servers for the scale-out tests: PostgreSQL in a temporary data
// directory (initdb + pg_ctl as the postgres user, loopback only) and a
// 3-node NATS cluster with JetStream. Each is started and stopped by PID.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./harness');

function pgBin(name) {
  for (const v of ['17', '16', '15']) {
    const p = `/usr/lib/postgresql/${v}/bin/${name}`;
    if (fs.existsSync(p)) return p;
  }
  throw new Error('PostgreSQL is not installed: run scripts/deps.sh test');
}

class Postgres {
  async start() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-pg-'));
    h.onExit(() => this.stop()); /* pg_ctl daemonizes the server: stop it however the test ends */
    fs.chmodSync(this.dir, 0o755);
    execFileSync('chown', ['postgres:postgres', this.dir]);
    this.data = path.join(this.dir, 'data');
    this.port = await h.freePort();
    const asPg = (cmd, args) => execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: 'pipe' });
    asPg(pgBin('initdb'), ['-D', this.data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
    this.asPg = asPg;
    // pg_ctl forks the server; its PID is in postmaster.pid and pg_ctl stop ends it.
    asPg(pgBin('pg_ctl'), ['-D', this.data, '-w', '-t', '30', '-l', path.join(this.dir, 'log'), '-o',
      `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`, 'start']);
    this.pid = Number(fs.readFileSync(path.join(this.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    asPg(pgBin('createdb'), ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', 'topobus']);
    this.url = `postgres://postgres@127.0.0.1:${this.port}/topobus`;
  }
  alive() { try { process.kill(this.pid, 0); return true; } catch (e) { return false; } }
  // Stops the server and starts it again on the same port and data, as an outage would.
  halt() { this.asPg(pgBin('pg_ctl'), ['-D', this.data, '-m', 'fast', '-w', 'stop']); }
  resume() {
    this.asPg(pgBin('pg_ctl'), ['-D', this.data, '-w', '-t', '30', '-l', path.join(this.dir, 'log'), '-o',
      `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off`, 'start']);
    this.pid = Number(fs.readFileSync(path.join(this.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
  }
  stop() {
    if (!this.dir) return;
    try { this.asPg(pgBin('pg_ctl'), ['-D', this.data, '-m', 'fast', '-w', 'stop']); } catch (e) {
      try { process.kill(this.pid, 'SIGKILL'); } catch (e2) { /* gone */ }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
}

// Three nats-server processes routed into one JetStream cluster.
class NatsCluster {
  async start() {
    this.nodes = [];
    for (let i = 0; i < 3; i++) {
      this.nodes.push({ name: `n${i + 1}`, port: await h.freePort(), cport: await h.freePort(),
        dir: fs.mkdtempSync(path.join(os.tmpdir(), `tb-nats-n${i + 1}-`)) });
    }
    this.url = this.nodes.map((n) => `nats://127.0.0.1:${n.port}`).join(',');
    h.onExit(() => { for (const n of this.nodes) fs.rmSync(n.dir, { recursive: true, force: true }); });
    for (const n of this.nodes) this.startNode(n);
    for (const n of this.nodes) await h.waitPort(n.port, 10000);
  }
  startNode(n) {
    const routes = this.nodes.filter((o) => o !== n).map((o) => `nats://127.0.0.1:${o.cport}`).join(',');
    n.proc = h.run(h.which('nats-server'), ['-a', '127.0.0.1', '-p', String(n.port), '-js', '-sd', n.dir,
      '--server_name', n.name, '--cluster_name', 'topobus-test', '--cluster', `nats://127.0.0.1:${n.cport}`,
      '--routes', routes]);
  }
  async kill(i, sig = 'SIGKILL') {
    const n = this.nodes[i];
    n.proc.kill(sig);
    await h.within(n.proc.exited, 10000, `${n.name} exit`);
    n.proc = null;
  }
  async stop() {
    for (const n of this.nodes || []) {
      if (n.proc) { n.proc.kill('SIGTERM'); await h.within(n.proc.exited, 10000, `${n.name} exit`); }
      fs.rmSync(n.dir, { recursive: true, force: true });
    }
  }
}

module.exports = { Postgres, NatsCluster, pgBin };
