// The topobus live editor: lists topologies, edits one through the REST API
// (each edit is a mutation with expected_version), and follows it live over
// an EventSource. No dependencies, no build step.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const state = {
    token: null, id: null, doc: null, status: null, version: null,
    mutations: new Map(), order: 0, es: null, lastEventId: null, retryTimer: null, selected: null,
    docTimer: null,
  };

  // The token arrives once as ?token= and is then kept out of the address bar and links.
  function readToken() {
    const url = new URL(location.href);
    let token = url.searchParams.get('token');
    if (token) {
      sessionStorage.setItem('topobus.token', token);
      url.searchParams.delete('token');
      history.replaceState(null, '', url.pathname + url.search + url.hash);
    } else {
      token = sessionStorage.getItem('topobus.token');
    }
    return token;
  }

  function who(token) {
    try {
      const claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
      const roles = claims.roles || (claims.role ? [claims.role] : []);
      return `${claims.sub} (${roles.join(', ')})`;
    } catch (e) {
      return '';
    }
  }

  function notice(text) { $('notice').textContent = text || ''; }

  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: { authorization: `Bearer ${state.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = new Error((json && (json.message || json.error)) || `HTTP ${res.status}`);
      err.status = res.status;
      err.body = json;
      throw err;
    }
    return json;
  }

  // ---- topologies ---------------------------------------------------------

  async function loadTopologies() {
    const list = await api('GET', '/topologies');
    const ul = $('topologies');
    ul.replaceChildren(...list.map((t) => {
      const li = document.createElement('li');
      li.dataset.testid = 'topology';
      li.dataset.id = t.id;
      li.className = t.id === state.id ? 'selected' : '';
      const name = document.createElement('span');
      name.textContent = t.name;
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.dataset.status = t.status;
      badge.textContent = t.status;
      li.append(name, badge);
      li.addEventListener('click', () => select(t.id));
      return li;
    }));
  }

  async function select(id) {
    closeStream();
    state.id = id;
    state.mutations.clear();
    state.lastEventId = null;
    state.selected = null;
    if (location.hash !== `#${id}`) history.replaceState(null, '', `#${id}`);
    $('editor').hidden = false;
    for (const li of $('topologies').children) li.className = li.dataset.id === id ? 'selected' : '';
    await Promise.all([loadDocument(), loadMutations()]);
    openStream();
  }

  async function loadDocument() {
    const id = state.id;
    const doc = await api('GET', `/topologies/${id}`);
    if (id !== state.id) return;
    state.doc = doc;
    if (state.version === null || doc.version >= state.version) state.version = doc.version;
    state.status = doc.status;
    render();
  }

  // Events come faster than a document fetch: coalesce refreshes.
  function refreshDocument() {
    clearTimeout(state.docTimer);
    state.docTimer = setTimeout(() => loadDocument().catch((e) => notice(e.message)), 50);
  }

  async function loadMutations() {
    const rows = await api('GET', `/topologies/${state.id}/mutations`);
    for (const r of rows) upsertMutation(r.id, r.op, r.payload, r.state, r.error);
    renderMutations();
  }

  // ---- the live stream ----------------------------------------------------

  function setConn(s, text) {
    const el = $('conn');
    el.dataset.state = s;
    el.textContent = text;
  }

  function closeStream() {
    clearTimeout(state.retryTimer);
    if (state.es) state.es.close();
    state.es = null;
  }

  // A single-use ticket keeps the JWT out of the stream URL; a reconnect needs a new ticket,
  // so this page reconnects itself (jittered) and resumes from the last cursor.
  async function openStream() {
    const id = state.id;
    setConn(state.lastEventId ? 'reconnecting' : 'connecting', state.lastEventId ? 'reconnecting…' : 'connecting…');
    let ticket;
    try {
      ticket = (await api('POST', '/auth/sse-ticket')).ticket;
    } catch (e) {
      scheduleReconnect();
      return;
    }
    if (id !== state.id) return;
    let url = `/topologies/${encodeURIComponent(id)}/events?ticket=${ticket}`;
    if (state.lastEventId) url += `&last_event_id=${encodeURIComponent(state.lastEventId)}`;
    const es = new EventSource(url);
    state.es = es;
    const on = (name, fn) => es.addEventListener(name, (e) => {
      if (e.lastEventId) state.lastEventId = e.lastEventId;
      fn(e.data ? JSON.parse(e.data) : null);
    });
    on('snapshot', onSnapshot);
    on('bus', (d) => setConn(d.state === 'up' ? 'live' : 'bus-down', d.state === 'up' ? 'live' : 'bus down (keepalives only)'));
    on('status', (d) => { state.status = d.payload.state; render(); loadTopologies().catch(() => {}); });
    on('mutation.enqueued', (d) => { upsertMutation(d.payload.mutation_id, d.payload.op, d.payload.payload, 'pending'); renderMutations(); });
    on('mutation.applying', (d) => { upsertMutation(d.payload.mutation_id, d.payload.op, d.payload.payload, 'applying'); renderMutations(); });
    on('mutation.applied', (d) => {
      upsertMutation(d.payload.mutation_id, d.payload.op, null, 'applied');
      if (d.payload.version > state.version) state.version = d.payload.version;
      renderMutations();
      refreshDocument();
    });
    on('mutation.failed', (d) => {
      upsertMutation(d.payload.mutation_id, d.payload.op, null, 'failed', d.payload.reason);
      renderMutations();
    });
    es.addEventListener('error', (e) => {
      if (es !== state.es) return;
      if (e.data) notice('the stream was interrupted; reconnecting');
      es.close();
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    setConn('reconnecting', 'reconnecting…');
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(openStream, 2000 + Math.random() * 3000);
  }

  function onSnapshot(s) {
    state.status = s.status;
    state.version = s.version;
    for (const m of state.mutations.values()) {
      // Rows no longer in flight were settled while we were away: the list tells how.
      if (m.state === 'pending' || m.state === 'applying') m.stale = true;
    }
    for (const r of s.in_flight) upsertMutation(r.id, r.op, r.payload, r.state, r.error);
    if ([...state.mutations.values()].some((m) => m.stale)) loadMutations().catch(() => {});
    setConn(s.bus === 'up' ? 'live' : 'bus-down', s.bus === 'up' ? 'live' : `bus ${s.bus} (keepalives only)`);
    refreshDocument();
    renderMutations();
  }

  // ---- mutations ----------------------------------------------------------

  const RANK = { pending: 0, applying: 1, applied: 2, failed: 2 };

  function upsertMutation(id, op, payload, mstate, detail) {
    let m = state.mutations.get(id);
    if (!m) {
      m = { id, op, target: payload && payload.id, state: mstate, detail: detail || '', order: state.order++ };
      state.mutations.set(id, m);
      return;
    }
    // Events may repeat what the snapshot said: never move a row backwards.
    if (RANK[mstate] >= RANK[m.state]) m.state = mstate;
    if (payload && payload.id) m.target = payload.id;
    if (detail) m.detail = detail;
    m.stale = false;
  }

  async function mutate(op, payload) {
    notice('');
    try {
      const r = await api('POST', `/topologies/${state.id}/mutations`, { op, payload, expected_version: state.version });
      upsertMutation(r.mutation_id, op, payload, 'pending');
      renderMutations();
      return true;
    } catch (e) {
      if (e.body && e.body.error === 'version_conflict') {
        notice(`the topology changed (now version ${e.body.current}); try again`);
        state.version = e.body.current;
        refreshDocument();
      } else {
        notice(e.message);
      }
      return false;
    }
  }

  // ---- rendering ----------------------------------------------------------

  function render() {
    const doc = state.doc;
    if (!doc) return;
    $('topo-name').textContent = doc.name;
    $('topo-status').textContent = state.status;
    $('topo-status').dataset.status = state.status;
    $('topo-version').textContent = state.version;
    $('deploy').disabled = state.status !== 'pending';
    $('teardown').disabled = !['active', 'degraded', 'failed', 'deploying'].includes(state.status);
    renderGraph(doc);
    for (const sel of [$('link-from'), $('link-to')]) {
      const keep = sel.value;
      sel.replaceChildren(...doc.nodes.map((n) => new Option(n.id, n.id)));
      if (doc.nodes.some((n) => n.id === keep)) sel.value = keep;
    }
    renderSelection();
  }

  function renderGraph(doc) {
    const svg = $('graph');
    const pos = new Map();
    const n = doc.nodes.length;
    doc.nodes.forEach((node, i) => {
      const a = (2 * Math.PI * i) / Math.max(n, 1) - Math.PI / 2;
      pos.set(node.id, n === 1 ? [320, 200] : [320 + 150 * Math.cos(a), 200 + 150 * Math.sin(a)]);
    });
    const items = [];
    for (const link of doc.links) {
      const [x1, y1] = pos.get(link.from) || [0, 0];
      const [x2, y2] = pos.get(link.to) || [0, 0];
      const g = document.createElementNS(SVG, 'g');
      g.setAttribute('class', `link${state.selected === `link:${link.id}` ? ' selected' : ''}`);
      g.dataset.testid = 'link';
      g.dataset.id = link.id;
      const line = document.createElementNS(SVG, 'line');
      Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => line.setAttribute(k, v));
      g.append(line);
      g.addEventListener('click', () => { state.selected = `link:${link.id}`; render(); });
      items.push(g);
    }
    for (const node of doc.nodes) {
      const [x, y] = pos.get(node.id);
      const g = document.createElementNS(SVG, 'g');
      g.setAttribute('class', `node${state.selected === `node:${node.id}` ? ' selected' : ''}`);
      g.dataset.testid = 'node';
      g.dataset.id = node.id;
      const c = document.createElementNS(SVG, 'circle');
      c.setAttribute('cx', x);
      c.setAttribute('cy', y);
      c.setAttribute('r', 26);
      const t = document.createElementNS(SVG, 'text');
      t.setAttribute('x', x);
      t.setAttribute('y', y + 4);
      t.textContent = node.label || node.id;
      g.append(c, t);
      g.addEventListener('click', () => { state.selected = `node:${node.id}`; render(); });
      items.push(g);
    }
    svg.replaceChildren(...items);
  }

  function renderSelection() {
    const box = $('selection');
    if (!state.selected) { box.hidden = true; return; }
    const [kind, id] = state.selected.split(':');
    const list = kind === 'node' ? state.doc.nodes : state.doc.links;
    if (!list.some((x) => x.id === id)) { state.selected = null; box.hidden = true; return; }
    box.hidden = false;
    $('selection-label').textContent = `${kind} ${id}`;
  }

  function renderMutations() {
    const rows = [...state.mutations.values()].sort((a, b) => a.order - b.order);
    $('mutations').replaceChildren(...rows.map((m) => {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'mutation-row';
      tr.dataset.id = m.id;
      tr.dataset.op = m.op;
      tr.dataset.state = m.state;
      tr.dataset.target = m.target || '';
      for (const v of [m.id, m.op, m.target || '', m.state, m.detail]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      return tr;
    }));
  }

  // ---- wiring -------------------------------------------------------------

  function bind() {
    $('create-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        const doc = await api('POST', '/topologies', { name: $('create-name').value });
        $('create-name').value = '';
        await loadTopologies();
        await select(doc.id);
      } catch (err) {
        notice(err.message);
      }
    });
    $('node-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const payload = { id: $('node-id').value, kind: $('node-kind').value };
      if ($('node-label').value) payload.label = $('node-label').value;
      if (await mutate('add_node', payload)) $('node-form').reset();
    });
    $('link-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const payload = { id: $('link-id').value, from: $('link-from').value, to: $('link-to').value };
      if (await mutate('add_link', payload)) $('link-id').value = '';
    });
    $('remove').addEventListener('click', async () => {
      const [kind, id] = state.selected.split(':');
      if (await mutate(kind === 'node' ? 'remove_node' : 'remove_link', { id })) state.selected = null;
    });
    for (const [button, action] of [['deploy', 'deploy'], ['teardown', 'teardown']]) {
      $(button).addEventListener('click', async () => {
        notice('');
        try {
          await api('POST', `/topologies/${state.id}/${action}`);
        } catch (err) {
          notice(err.message);
        }
      });
    }
  }

  async function main() {
    state.token = readToken();
    if (!state.token) {
      notice('open this page with ?token=<JWT> (topobus serve prints a link)');
      return;
    }
    $('who').textContent = who(state.token);
    bind();
    try {
      await loadTopologies();
      const id = location.hash.slice(1);
      if (id) await select(id);
    } catch (e) {
      notice(e.status === 401 ? 'the token was refused (expired?)' : e.message);
    }
  }

  main();
})();
