// The live editor page in a real browser (Debian's Chromium, headless,
// driven by playwright-core) against `topobus serve` as a real process:
// no console errors; create and deploy a topology; add nodes and a link
// through the UI and watch pending → applying → applied; a failing mutation
// and the status turning degraded; a second browser context following live;
// the serve process restarted under the page. Saves a screenshot.
// Usage: node browser_editor.js <path to topobus> [screenshot path]
// (default: $TB_ARTIFACTS/editor.png)
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');
const h = require('./lib/harness');
const { check, waitFor } = h;

const topobus = process.argv[2];
const shot = process.argv[3] || path.join(process.env.TB_ARTIFACTS || os.tmpdir(), 'editor.png');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-browser-'));
const hook = path.join(dir, 'hook.sh');
// A slow but successful hook keeps every state on screen long enough to be seen.
fs.writeFileSync(hook, '#!/bin/sh\ncat >/dev/null\nsleep 0.3\n', { mode: 0o755 });
const serve = new h.Gateway(topobus, {
  command: 'serve', dir, keepalive: 1, drain: 1,
  env: { TOPOBUS_APPLY_HOOK: hook, TOPOBUS_APPLY_TIMEOUT_S: '5', TOPOBUS_CLAIM_LEASE_S: '10' },
});
let browser;
const errors = [];

async function openPage(context, token, hash = '') {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
  await page.goto(`${serve.base}/?token=${token}${hash}`);
  await page.getByTestId('who').filter({ hasText: '(' }).waitFor();
  // Every state a mutation row passes through, in order, as the page shows it.
  await page.evaluate(() => {
    window.__states = {};
    const record = (row) => {
      const seen = (window.__states[row.dataset.id] = window.__states[row.dataset.id] || []);
      if (seen.at(-1) !== row.dataset.state) seen.push(row.dataset.state);
    };
    new MutationObserver(() => document.querySelectorAll('[data-testid=mutation-row]').forEach(record))
      .observe(document.body, { subtree: true, childList: true, attributes: true });
  });
  return page;
}

const rows = (page, state) => page.locator(`[data-testid=mutation-row]${state ? `[data-state=${state}]` : ''}`);

async function addNode(page, id, kind) {
  await page.getByTestId('node-id').fill(id);
  await page.getByTestId('node-kind').fill(kind);
  await page.getByTestId('add-node').click();
}

async function main() {
  await serve.start();
  const admin = serve.token('alice', 'admin');
  const viewer = serve.token('bob', 'viewer');
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const ctxA = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await openPage(ctxA, admin);
  let id;
  let second;

  await h.runCases([
    ['the page loads without console errors and keeps the token out of the address bar', async () => {
      check(!page.url().includes('token='), `token left in the URL: ${page.url()}`);
      check(errors.length === 0, errors.join('\n'));
    }],
    ['create and deploy a topology', async () => {
      await page.getByTestId('create-name').fill('lab');
      await page.getByTestId('create-button').click();
      await page.getByTestId('topo-name').filter({ hasText: 'lab' }).waitFor();
      id = new URL(page.url()).hash.slice(1);
      check(/^t_[0-9a-f]{16}$/.test(id), `selected id ${id}`);
      await page.getByTestId('conn').and(page.locator('[data-state=live]')).waitFor();
      await page.getByTestId('deploy').click();
      await page.locator('[data-testid=topo-status][data-status=active]').waitFor({ timeout: 10000 });
    }],
    ['add two nodes and a link; each goes pending → applying → applied', async () => {
      await addNode(page, 'r1', 'router');
      await rows(page, 'applied').first().waitFor({ timeout: 10000 });
      await addNode(page, 's1', 'switch');
      await page.locator('[data-testid=node]').nth(1).waitFor({ timeout: 10000 });
      await page.getByTestId('link-id').fill('l1');
      await page.getByTestId('link-from').selectOption('r1');
      await page.getByTestId('link-to').selectOption('s1');
      await page.getByTestId('add-link').click();
      // A vertical line has a zero-width box, which Playwright calls hidden: wait for it to exist.
      await page.locator('[data-testid=link][data-id=l1]').waitFor({ state: 'attached', timeout: 10000 });
      await waitFor(async () => (await rows(page, 'applied').count()) === 3, 10000, 'three applied rows');
      const states = await page.evaluate(() => window.__states);
      for (const [mid, seen] of Object.entries(states)) {
        check(seen.join() === 'pending,applying,applied', `row ${mid} went ${seen}`);
      }
      check(Object.keys(states).length === 3, `three rows observed: ${Object.keys(states)}`);
      check(await page.getByTestId('topo-version').textContent() === '3', 'version 3');
    }],
    ['a second browser context follows the same topology live', async () => {
      const ctxB = await browser.newContext();
      second = await openPage(ctxB, viewer, `#${id}`);
      await waitFor(async () => (await second.locator('[data-testid=node]').count()) === 2, 10000, 'the graph in context B');
      await addNode(page, 'r2', 'router');
      await second.locator('[data-testid=node][data-id=r2]').waitFor({ timeout: 10000 });
      await second.locator('[data-testid=mutation-row][data-target=r2][data-state=applied]').waitFor({ timeout: 10000 });
    }],
    ['a failing mutation shows as failed and the status turns degraded', async () => {
      await addNode(page, 'r1', 'router'); // duplicate id: breaks an invariant
      const failed = page.locator('[data-testid=mutation-row][data-state=failed]');
      await failed.waitFor({ timeout: 10000 });
      const detail = await failed.locator('td').nth(4).textContent();
      check(/r1/.test(detail), `failure reason names the node: ${detail}`);
      await page.locator('[data-testid=topo-status][data-status=degraded]').waitFor({ timeout: 10000 });
      await second.locator('[data-testid=topo-status][data-status=degraded]').waitFor({ timeout: 10000 });
      check(await page.locator('[data-testid=node]').count() === 3, 'the document is unchanged');
    }],
    ['serve restarted under the page: it reconnects and shows the same graph', async () => {
      const r = await serve.stop();
      check(r.code === 0, `serve exit ${r.code}`);
      await page.locator('[data-testid=conn][data-state=reconnecting]').waitFor({ timeout: 10000 });
      await serve.start();
      await page.locator('[data-testid=conn][data-state=live]').waitFor({ timeout: 15000 });
      await second.locator('[data-testid=conn][data-state=live]').waitFor({ timeout: 15000 });
      check(await page.locator('[data-testid=node]').count() === 3, 'same nodes after the restart');
      check(await page.locator('[data-testid=link]').count() === 1, 'same link after the restart');
      await addNode(page, 'fw1', 'firewall');
      await second.locator('[data-testid=node][data-id=fw1]').waitFor({ timeout: 10000 });
      check(errors.length === 0, errors.join('\n'));
      await page.getByTestId('node-id').fill('');
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`  screenshot: ${shot}`);
    }],
  ], async () => {
    if (browser) await browser.close();
    await serve.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
}

main();
