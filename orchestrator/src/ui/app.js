// fleet's dashboard. Plain script, no framework, compiled into fleetd (see ui/mod.rs).
//
// The token stays in this tab (sessionStorage) and goes with every API call as a bearer token.
// One stream, GET /v1/watch/dashboard (server-sent events, read with fetch so the token can be
// sent), brings an overview and a sample every couple of seconds; pages redraw from it and fetch
// what they show beyond it (a page of a table, a node, new events) only when it moved. Nothing
// reloads the page.
(function () {
  'use strict';
  const $ = (sel, root) => (root || document).querySelector(sel);
  const state = {
    token: sessionStorage.getItem('fleet.token') || '',
    who: null,
    overview: null,
    history: [],
    priorEvents: [],
    every: 2,
    stream: null,
    nodesVersion: null,
    lastEvent: null,
    table: { sort: 'id', order: 'asc', q: '', offset: 0, limit: 50, live: true },
    offers: { sort: 'price_per_gpu', order: 'asc', q: '', offset: 0, limit: 50, unavailable: false },
    events: { list: [], kind: '' },
  };
  const MAX_HISTORY = 1800;

  // ---- helpers ------------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const money = (m) => (m === null || m === undefined ? '–' : '$' + Number(m).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const secs = (s) => (s === null || s === undefined ? '–' : s < 1 ? (s * 1000).toFixed(0) + ' ms' : s.toFixed(2) + ' s');
  const pct = (r) => (r === null || r === undefined ? '–' : (r * 100).toFixed(1) + '%');
  const rate = (r) => (r === null || r === undefined ? '–' : r.toFixed(2) + '/s');
  function age(s) {
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  }
  const when = (t) => new Date(t).toLocaleString();
  const ms = (t) => new Date(t).getTime();

  function showError(msg) {
    const e = $('#error');
    e.textContent = msg || '';
    e.hidden = !msg;
  }

  async function api(path, opts) {
    const o = Object.assign({ headers: {} }, opts || {});
    o.headers.Authorization = 'Bearer ' + state.token;
    const r = await fetch(path, o);
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
    if (r.status === 401) {
      logout((body && body.error) || 'the token was refused');
      throw new Error('logged out');
    }
    if (!r.ok) throw new Error((body && body.error) || r.status + ' ' + r.statusText);
    return body;
  }

  const isAdmin = () => state.who && state.who.scope === 'admin';

  // ---- login and the live stream --------------------------------------------------------------

  async function login(token) {
    state.token = token;
    try {
      state.who = await api('/v1/whoami');
    } catch (e) {
      if (e.message !== 'logged out') logout(e.message);
      return;
    }
    sessionStorage.setItem('fleet.token', token);
    $('#login').hidden = true;
    $('#nav').hidden = false;
    $('#logout').hidden = false;
    $('#who').textContent = state.who.name + ' (' + state.who.scope + ')';
    document.body.dataset.scope = state.who.scope;
    try {
      const d = await api('/v1/dashboard');
      state.overview = d.overview;
      state.history = d.history;
      state.priorEvents = d.prior_events || [];
      state.every = d.every_s;
    } catch (e) {
      showError(e.message);
    }
    openStream();
    route();
  }

  function logout(why) {
    sessionStorage.removeItem('fleet.token');
    state.token = '';
    state.who = null;
    if (state.stream) state.stream.abort();
    state.stream = null;
    $('#nav').hidden = true;
    $('#logout').hidden = true;
    $('#who').textContent = '';
    $('#page').textContent = '';
    $('#live').className = 'live';
    delete document.body.dataset.scope;
    $('#login').hidden = false;
    $('#login-error').textContent = why || '';
    showError('');
  }

  // Server-sent events over fetch (EventSource cannot send the token): reconnects after a pause
  // when the stream ends, for as long as the tab is logged in.
  async function openStream() {
    const ctl = new AbortController();
    state.stream = ctl;
    let backoff = 500;
    while (state.stream === ctl) {
      try {
        const r = await fetch('/v1/watch/dashboard', { headers: { Authorization: 'Bearer ' + state.token }, signal: ctl.signal });
        if (r.status === 401) { logout('the token was refused'); return; }
        if (!r.ok) throw new Error('live updates: ' + r.status);
        $('#live').className = 'live on';
        backoff = 500;
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
            if (data) onUpdate(JSON.parse(data));
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      $('#live').className = 'live off';
      await new Promise((res) => setTimeout(res, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  function onUpdate(u) {
    state.overview = u.overview;
    const last = state.history[state.history.length - 1];
    if (!last || last.at !== u.sample.at) state.history.push(u.sample);
    if (state.history.length > MAX_HISTORY) state.history.splice(0, state.history.length - MAX_HISTORY);
    const page = current();
    if (page.name === 'fleet') drawFleet(false);
    else if (page.name === 'apps') drawApps(false);
    else if (page.name === 'nodes' && state.overview.nodes_version !== state.nodesVersion) loadNodes();
    else if (page.name === 'node' && state.overview.nodes_version !== state.nodesVersion) loadNode(page.id, false);
    else if (page.name === 'events' && state.overview.last_event !== state.lastEvent) moreEvents();
  }

  // ---- routing ----------------------------------------------------------------------------------

  function current() {
    const parts = (location.hash || '#/fleet').slice(2).split('/');
    if (parts[0] === 'nodes' && parts[1]) return { name: 'node', id: parts[1] };
    const name = ['fleet', 'apps', 'nodes', 'offerings', 'events'].includes(parts[0]) ? parts[0] : 'fleet';
    return { name };
  }

  function route() {
    if (!state.who) return;
    const page = current();
    document.querySelectorAll('#nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === page.name || (page.name === 'node' && a.dataset.page === 'nodes')));
    showError('');
    const root = $('#page');
    root.textContent = '';
    root.dataset.page = page.name;
    state.nodesVersion = null;
    if (page.name === 'fleet') drawFleet(true);
    else if (page.name === 'apps') drawApps(true);
    else if (page.name === 'nodes') drawNodes();
    else if (page.name === 'node') loadNode(page.id, true);
    else if (page.name === 'offerings') drawOfferings();
    else if (page.name === 'events') drawEvents();
  }

  // ---- fleet ------------------------------------------------------------------------------------

  function card(label, value, sub, key) {
    return h('div', { class: 'card', 'data-figure': key }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub ? h('div', { class: 'sub' }, sub) : null);
  }

  function meter(used, cap) {
    if (cap === null || cap === undefined) return null;
    const r = Number(cap) > 0 ? Number(used) / Number(cap) : 1;
    // Through the CSSOM: the page's security policy refuses inline style attributes.
    const bar = h('span', {});
    bar.style.width = Math.min(100, r * 100).toFixed(1) + '%';
    return h('div', { class: 'meter' + (r > 1 ? ' over' : r > 0.8 ? ' near' : '') }, bar);
  }

  function chartBox(id) {
    return h('div', { class: 'chart', id: id });
  }

  // Per-minute counts of the charted events, from the samples.
  function eventSeries() {
    const kinds = { launched: 'launches', 'launch-failed': 'failovers (launch refused)', 'instance-lost': 'preemptions / lost', 'orphan-collected': 'orphans collected' };
    const buckets = new Map();
    // The hour before fleetd started (from the store's events), then the samples since.
    for (const s of state.priorEvents.concat(state.history)) {
      const m = Math.floor(ms(s.at) / 60000) * 60000;
      const b = buckets.get(m) || {};
      for (const k in kinds) b[k] = (b[k] || 0) + ((s.events || {})[k] || 0);
      buckets.set(m, b);
    }
    const xs = [...buckets.keys()].sort((a, b) => a - b);
    return Object.keys(kinds).map((k) => ({ name: kinds[k], points: xs.map((x) => [x, buckets.get(x)[k]]) }));
  }

  function drawFleet(first) {
    const o = state.overview;
    const root = $('#page');
    if (!o) { root.textContent = 'waiting for the first sample…'; return; }
    if (first || !$('#fleet-cards')) {
      root.textContent = '';
      root.append(
        h('h1', {}, 'Fleet ', h('small', {}, o.fleet)),
        h('div', { class: 'cards', id: 'fleet-cards' }),
        h('div', { class: 'charts' }, chartBox('chart-burn'), chartBox('chart-nodes-time'), chartBox('chart-events')),
        h('h2', {}, 'Live nodes'),
        h('div', { class: 'charts' }, chartBox('chart-cloud'), chartBox('chart-region'), chartBox('chart-capacity'), chartBox('chart-state')),
      );
    }
    const c = o.cost;
    $('#fleet-cards').replaceChildren(
      h('div', { class: 'card', 'data-figure': 'burn' }, h('div', { class: 'label' }, 'Burn now'), h('div', { class: 'value' }, money(c.burn_per_hour) + '/h'),
        h('div', { class: 'sub' }, c.budget_per_hour ? 'of ' + money(c.budget_per_hour) + '/h hourly cap' : 'no hourly cap'), meter(c.burn_per_hour, c.budget_per_hour)),
      h('div', { class: 'card', 'data-figure': 'month' }, h('div', { class: 'label' }, 'Month to date'), h('div', { class: 'value' }, money(c.month_to_date)),
        h('div', { class: 'sub' }, 'forecast to month end ' + money(c.forecast_month_end) + (c.budget_per_month ? ' of ' + money(c.budget_per_month) + ' monthly cap' : ' (no monthly cap)')),
        meter(c.forecast_month_end, c.budget_per_month)),
      card('Live nodes', String(o.nodes.live), o.nodes.records + ' node records', 'live-nodes'),
      card('Apps', String(Object.keys(o.apps).length), Object.values(o.apps).reduce((n, a) => n + a.queued, 0) + ' requests queued', 'apps'),
    );
    const hist = state.history;
    const burn = [{ name: 'burn', points: hist.map((s) => [ms(s.at), Number(s.burn_per_hour)]) }];
    if (c.budget_per_hour) burn.push({ name: 'hourly cap', dashed: true, points: hist.map((s) => [ms(s.at), Number(c.budget_per_hour)]) });
    FleetCharts.line($('#chart-burn'), { title: 'Burn over time', x: { time: true }, y: { label: 'burn', unit: '$ per hour' }, series: burn });
    const states = [...new Set(hist.flatMap((s) => Object.keys(s.nodes)))].sort();
    FleetCharts.line($('#chart-nodes-time'), { title: 'Nodes by state over time', x: { time: true }, y: { label: 'nodes', unit: 'count' }, stacked: true, step: true,
      series: states.map((st) => ({ name: st, points: hist.map((s) => [ms(s.at), s.nodes[st] || 0]) })) });
    FleetCharts.line($('#chart-events'), { title: 'Launches, failovers, preemptions and orphans', x: { time: true }, y: { label: 'events', unit: 'per minute' }, series: eventSeries() });
    const items = (m) => Object.keys(m).sort().map((k) => ({ name: k, value: m[k] }));
    FleetCharts.bars($('#chart-cloud'), { title: 'Live nodes by cloud', x: { label: 'nodes', unit: 'count' }, y: { label: 'cloud' }, items: items(o.nodes.by_cloud) });
    FleetCharts.bars($('#chart-region'), { title: 'Live nodes by region', x: { label: 'nodes', unit: 'count' }, y: { label: 'region' }, items: items(o.nodes.by_region) });
    FleetCharts.bars($('#chart-capacity'), { title: 'Live nodes by capacity type', x: { label: 'nodes', unit: 'count' }, y: { label: 'capacity type' }, items: items(o.nodes.by_capacity) });
    FleetCharts.bars($('#chart-state'), { title: 'Node records by state', x: { label: 'nodes', unit: 'count' }, y: { label: 'state' }, items: items(o.nodes.by_state) });
  }

  // ---- apps -------------------------------------------------------------------------------------

  function drawApps(first) {
    const o = state.overview;
    const root = $('#page');
    if (!o) { root.textContent = 'waiting for the first sample…'; return; }
    const names = Object.keys(o.apps).sort();
    if (first || root.dataset.apps !== names.join(',')) {
      root.textContent = '';
      root.dataset.apps = names.join(',');
      root.append(h('h1', {}, 'Apps'));
      if (!names.length) root.append(h('p', {}, 'No apps: apply a spec (fleetctl apply -f fleet.toml).'));
      for (const n of names) {
        root.append(h('section', { class: 'app', 'data-app': n }, h('h2', {}, n), h('div', { class: 'cards' }),
          h('div', { class: 'charts' }, h('div', { class: 'chart rps' }), h('div', { class: 'chart latency' }), h('div', { class: 'chart queue' }), h('div', { class: 'chart runners' }), h('div', { class: 'chart cold' }))));
      }
    }
    const hist = state.history;
    for (const n of names) {
      const a = o.apps[n];
      const sec = root.querySelector('section[data-app="' + CSS.escape(n) + '"]');
      if (!sec) continue;
      const streams = a.ttft_p50_s !== null && a.ttft_p50_s !== undefined;
      const lat = streams ? 'Time to first token' : 'Latency';
      const p = streams ? 'ttft' : 'latency';
      const runners = Object.entries(a.runners).map(([k, v]) => v + ' ' + k).join(', ') || 'none';
      sec.querySelector('.cards').replaceChildren(
        card('Requests', rate(a.requests_per_s), a.done + ' served, ' + a.failed + ' failed since fleetd started', 'rps'),
        card(lat + ' p50 / p90 / p99', secs(a[p + '_p50_s']) + ' / ' + secs(a[p + '_p90_s']) + ' / ' + secs(a[p + '_p99_s']), 'over the last requests', 'latency'),
        card('Error rate', pct(a.error_rate), 'last minute', 'errors'),
        card('Queue depth', String(a.queued), a.in_flight + ' in flight', 'queued'),
        card('Runners', String(Object.values(a.runners).reduce((x, y) => x + y, 0)), runners, 'runners'),
        card('Cost per 1,000 requests', money(a.cost_per_1k_requests), money(a.burn_per_hour) + '/h on ' + a.nodes + ' nodes', 'cost-per-1k'),
      );
      const get = (s) => s.apps[n] || { queued: 0, in_flight: 0, done: 0, failed: 0, runners: {} };
      const rps = [];
      for (let i = 1; i < hist.length; i++) {
        const dt = (ms(hist[i].at) - ms(hist[i - 1].at)) / 1000;
        const a0 = get(hist[i - 1]), a1 = get(hist[i]);
        if (dt > 0) rps.push([ms(hist[i].at), Math.max(0, a1.done + a1.failed - a0.done - a0.failed) / dt]);
      }
      const errs = [];
      for (let i = 1; i < hist.length; i++) {
        const dt = (ms(hist[i].at) - ms(hist[i - 1].at)) / 1000;
        if (dt > 0) errs.push([ms(hist[i].at), Math.max(0, get(hist[i]).failed - get(hist[i - 1]).failed) / dt]);
      }
      FleetCharts.line(sec.querySelector('.rps'), { title: n + ': requests finished', x: { time: true }, y: { label: 'requests', unit: 'per second' },
        series: [{ name: 'finished', points: rps }, { name: 'failed', points: errs }] });
      FleetCharts.line(sec.querySelector('.latency'), { title: n + ': ' + lat.toLowerCase(), x: { time: true }, y: { label: lat.toLowerCase(), unit: 's' },
        series: ['p50', 'p90', 'p99'].map((q) => ({ name: q, points: hist.filter((s) => s.apps[n]).map((s) => [ms(s.at), s.apps[n][p + '_' + q + '_s']]) })) });
      FleetCharts.line(sec.querySelector('.queue'), { title: n + ': queue depth', x: { time: true }, y: { label: 'requests', unit: 'count' }, step: true,
        series: [{ name: 'queued', points: hist.map((s) => [ms(s.at), get(s).queued]) }, { name: 'in flight', points: hist.map((s) => [ms(s.at), get(s).in_flight]) }] });
      const rstates = ['starting', 'busy', 'idle', 'pending', 'stopping'];
      FleetCharts.line(sec.querySelector('.runners'), { title: n + ': runners by state over time', x: { time: true }, y: { label: 'runners', unit: 'count' }, stacked: true, step: true,
        series: rstates.map((st) => ({ name: st, points: hist.map((s) => [ms(s.at), get(s).runners[st] || 0]) })) });
      const cs = a.cold_starts;
      const phases = [];
      if (cs.nodes) phases.push({ name: 'provision p50', value: cs.provision_p50_s }, { name: 'boot + bootstrap p50', value: cs.bootstrap_p50_s });
      if (cs.count) phases.push({ name: 'fetch p50', value: cs.fetch_p50_s }, { name: 'fetch max', value: cs.fetch_max_s }, { name: 'load p50', value: cs.load_p50_s }, { name: 'load max', value: cs.load_max_s });
      if (cs.first_token_p50_s !== null && cs.first_token_p50_s !== undefined) phases.push({ name: 'first token p50', value: cs.first_token_p50_s });
      FleetCharts.bars(sec.querySelector('.cold'), { title: n + ': cold starts by phase (' + cs.nodes + ' nodes ready, ' + cs.count + ' runner starts reported)', x: { label: 'duration', unit: 's' }, y: { label: 'phase' }, empty: 'no cold start yet',
        items: phases });
    }
  }

  // ---- nodes ------------------------------------------------------------------------------------

  const NODE_COLUMNS = [['id', 'Node'], ['app', 'App'], ['cloud', 'Cloud'], ['region', 'Region'], ['offering', 'Offering'], ['price', 'Price'], ['age', 'Age'], ['state', 'State'], ['health', 'Health'], ['runners', 'Runners']];

  function drawNodes() {
    const t = state.table;
    const root = $('#page');
    const head = h('tr', {}, NODE_COLUMNS.map(([k, label]) => h('th', { 'data-sort': k, class: t.sort === k ? 'sorted ' + t.order : '', tabindex: 0, onclick: () => sortBy(k), onkeydown: (e) => { if (e.key === 'Enter') sortBy(k); } }, label)));
    root.append(
      h('h1', {}, 'Nodes'),
      h('div', { class: 'toolbar' },
        h('input', { id: 'node-filter', type: 'search', placeholder: 'filter: cloud, region, state, app…', value: t.q, oninput: debounce((e) => { t.q = e.target.value; t.offset = 0; loadNodes(); }, 200) }),
        h('label', {}, h('input', { id: 'node-live', type: 'checkbox', checked: t.live, onchange: (e) => { t.live = e.target.checked; t.offset = 0; loadNodes(); } }), ' hide terminated'),
        h('span', { id: 'node-count', class: 'muted' })),
      h('div', { class: 'scroll' }, h('table', { id: 'nodes-table' }, h('thead', {}, head), h('tbody', {}))),
      h('div', { class: 'pager' },
        h('button', { id: 'node-prev', type: 'button', onclick: () => { t.offset = Math.max(0, t.offset - t.limit); loadNodes(); } }, '← previous'),
        h('span', { id: 'node-range', class: 'muted' }),
        h('button', { id: 'node-next', type: 'button', onclick: () => { t.offset += t.limit; loadNodes(); } }, 'next →')),
    );
    loadNodes();
  }

  function sortBy(k) {
    const t = state.table;
    t.order = t.sort === k && t.order === 'asc' ? 'desc' : 'asc';
    t.sort = k;
    t.offset = 0;
    document.querySelectorAll('#nodes-table th').forEach((th) => { th.className = th.dataset.sort === k ? 'sorted ' + t.order : ''; });
    loadNodes();
  }

  function debounce(f, wait) {
    let timer = null;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => f(...args), wait); };
  }

  let nodesSeq = 0;
  async function loadNodes() {
    const t = state.table;
    const seq = ++nodesSeq;
    state.nodesVersion = state.overview ? state.overview.nodes_version : null;
    const qs = new URLSearchParams({ limit: t.limit, offset: t.offset, sort: t.sort, order: t.order, live: t.live });
    if (t.q) qs.set('q', t.q);
    let page;
    try { page = await api('/v1/dashboard/nodes?' + qs); } catch (e) { showError(e.message); return; }
    if (seq !== nodesSeq || current().name !== 'nodes') return;
    const body = $('#nodes-table tbody');
    if (!body) return;
    const rows = page.rows.map((r) => h('tr', { 'data-node': r.id, class: r.health === 'ok' || r.health === '-' ? '' : 'bad' },
      h('td', {}, h('a', { href: '#/nodes/' + r.id }, String(r.id))),
      h('td', {}, r.app), h('td', {}, r.cloud || '–'), h('td', {}, r.region || '–'),
      h('td', {}, (r.offering || '–') + (r.capacity ? ' (' + r.capacity + ')' : '')),
      h('td', { class: 'num' }, r.price_per_hour ? money(r.price_per_hour) + '/h' : '–'),
      h('td', { class: 'num' }, age(r.age_s)),
      h('td', { class: 'state' }, r.state + (r.cordoned ? ' (cordoned)' : '')),
      h('td', { class: 'health' }, r.health),
      h('td', { class: 'num' }, String(r.runners))));
    body.replaceChildren(...rows);
    if (!rows.length) body.append(h('tr', {}, h('td', { colspan: NODE_COLUMNS.length, class: 'muted' }, page.total ? 'no node matches' : 'no nodes yet')));
    $('#node-count').textContent = page.matched + ' of ' + page.total + ' nodes';
    $('#node-range').textContent = page.matched ? (page.offset + 1) + '–' + Math.min(page.offset + page.limit, page.matched) + ' of ' + page.matched : '';
    $('#node-prev').disabled = page.offset === 0;
    $('#node-next').disabled = page.offset + page.limit >= page.matched;
    $('#page').dataset.ready = 'nodes';
    performance.mark('nodes-rendered');
  }

  // ---- one node ---------------------------------------------------------------------------------

  async function loadNode(id, first) {
    state.nodesVersion = state.overview ? state.overview.nodes_version : null;
    let n, events, log;
    try {
      [n, events, log] = await Promise.all([
        api('/v1/nodes/' + encodeURIComponent(id)),
        api('/v1/events?node=' + encodeURIComponent(id) + '&last=50'),
        api('/v1/nodes/' + encodeURIComponent(id) + '/logs').catch((e) => ({ missing: e.message })),
      ]);
    } catch (e) { showError(e.message); return; }
    const page = current();
    if (page.name !== 'node' || page.id !== id) return;
    const root = $('#page');
    const scroll = first ? 0 : window.scrollY;
    const o = (n.candidates && n.candidates[n.attempt]) ? n.candidates[n.attempt].offering : null;
    const health = n.agent ? n.agent.health : null;
    const kv = (k, v) => h('tr', {}, h('th', {}, k), h('td', {}, v));
    const actions = h('div', { class: 'actions', id: 'node-actions' });
    if (isAdmin()) {
      actions.append(
        h('button', { type: 'button', 'data-action': 'drain', onclick: () => act(id, 'drain', 'Drain node ' + id + '? Its runners finish their requests, then the node is released.') }, 'Drain'),
        n.cordoned
          ? h('button', { type: 'button', 'data-action': 'uncordon', onclick: () => act(id, 'uncordon') }, 'Uncordon')
          : h('button', { type: 'button', 'data-action': 'cordon', onclick: () => act(id, 'cordon') }, 'Cordon'));
    }
    const gpus = health && health.devices && health.devices.length
      ? h('div', { class: 'scroll' }, h('table', { id: 'gpus' }, h('thead', {}, h('tr', {}, ['GPU', 'Model', 'Utilisation', 'Memory', 'Temperature', 'ECC uncorrected', 'Throttling'].map((c) => h('th', {}, c)))),
        h('tbody', {}, health.devices.map((g) => h('tr', {},
          h('td', {}, String(g.index)), h('td', {}, g.model || g.name),
          h('td', { class: 'num' }, g.utilization_pct === undefined ? '–' : g.utilization_pct + ' %'),
          h('td', { class: 'num' }, (g.memory_used_mib === undefined ? '?' : g.memory_used_mib) + ' / ' + g.memory_total_mib + ' MiB'),
          h('td', { class: 'num' }, g.temperature_c === undefined ? '–' : g.temperature_c + ' °C'),
          h('td', { class: 'num' }, g.ecc_uncorrected === undefined ? '–' : String(g.ecc_uncorrected)),
          h('td', {}, (g.throttling || []).join(', ') || 'none'))))))
      : h('p', { class: 'muted', id: 'gpus' }, health ? 'The agent reports no GPU (a CPU node).' : 'No agent has reported yet.');
    const b = health && health.burn_in;
    const burnIn = b
      ? h('p', { id: 'burn-in', class: b.passed ? '' : 'error' }, (b.passed ? 'passed: ' : 'FAILED: ') + b.tflops.toFixed(2) + ' TFLOP/s on ' + b.device + ' (' + b.dtype + ', ' + b.size + '×' + b.size + ', ' + b.iterations + ' iterations); needs ' + b.required_tflops.toFixed(2) + (b.expected_tflops ? ', expected ' + b.expected_tflops.toFixed(1) : '') + ' — ' + when(b.at))
      : h('p', { id: 'burn-in', class: 'muted' }, 'No burn-in reported.');
    const colds = health && health.cold_starts && health.cold_starts.length
      ? h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, h('tr', {}, ['Runner', 'App', 'Fetch', 'Load', 'From origin', 'From peers', 'Cached', 'At'].map((c) => h('th', {}, c)))),
        h('tbody', {}, health.cold_starts.map((c) => h('tr', {}, h('td', {}, String(c.runner)), h('td', {}, c.app), h('td', { class: 'num' }, secs(c.fetch_s)), h('td', { class: 'num' }, secs(c.load_s)),
          h('td', { class: 'num' }, mib(c.bytes_origin)), h('td', { class: 'num' }, mib(c.bytes_peers)), h('td', { class: 'num' }, mib(c.bytes_cached)), h('td', {}, when(c.at)))))))
      : h('p', { class: 'muted' }, 'No cold start reported.');
    root.replaceChildren(
      h('p', {}, h('a', { href: '#/nodes' }, '← all nodes')),
      h('h1', {}, 'Node ' + n.id + ' ', h('small', { class: 'state', id: 'node-state' }, lower(n.state.state || Object.keys(n.state)[0] || ''))),
      actions,
      h('div', { class: 'scroll' }, h('table', { class: 'kv', id: 'node-summary' },
        kv('App', n.app), kv('Offering', o ? o.cloud + '/' + o.region + (o.zone ? '/' + o.zone : '') + '/' + o.instance_type + ' (' + o.capacity + ')' : '–'),
        kv('Price', n.price ? money(n.price) + '/h' : '–'), kv('Cost this month', money(n.month_to_date)),
        kv('Created', when(n.created_at)), kv('Health', n.unhealthy || (n.agent ? (health.ok ? 'ok' : health.reason || 'not ok') : 'no agent yet')),
        kv('Cordoned', n.cordoned ? 'yes' : 'no'), kv('Runners loaded', health ? String(health.runners.length) + ', ' + health.in_flight + ' requests in flight' : '–'),
        kv('Agent', n.agent ? 'version ' + n.agent.version + ', up since ' + when(n.agent.since) : '–'))),
      h('h2', {}, 'GPUs'), gpus,
      h('h2', {}, 'Burn-in'), burnIn,
      h('h2', {}, 'Cold starts'), colds,
      h('h2', {}, 'Events'),
      events.length ? eventList(events.slice().reverse(), 'node-events') : h('p', { class: 'muted', id: 'node-events' }, 'No events.'),
      h('h2', {}, 'Agent log'),
      log.missing ? h('p', { class: 'muted', id: 'node-log' }, log.missing) : h('pre', { id: 'node-log' }, logText(log)),
    );
    if (!first) window.scrollTo(0, scroll);
    root.dataset.ready = 'node';
  }

  const lower = (s) => String(s).toLowerCase();
  const mib = (b) => (b / 1048576).toFixed(1) + ' MiB';

  function logText(log) {
    if (typeof log === 'string') return log;
    if (Array.isArray(log)) return log.join('\n');
    if (log && Array.isArray(log.lines)) return log.lines.join('\n');
    return JSON.stringify(log, null, 2);
  }

  async function act(id, what, confirmText) {
    if (confirmText && !window.confirm(confirmText)) return;
    try {
      await api('/v1/nodes/' + encodeURIComponent(id) + '/' + what, { method: 'POST' });
      loadNode(id, false);
    } catch (e) { showError(what + ': ' + e.message); }
  }

  // ---- offerings ----------------------------------------------------------------------------------

  function drawOfferings() {
    const t = state.offers;
    const sortable = { price_per_gpu: '$/GPU-h', price: '$/h', cloud: 'Cloud', availability: 'Availability' };
    const th = (k, label) => sortable[k]
      ? h('th', { 'data-sort': k, tabindex: 0, class: t.sort === k ? 'sorted ' + t.order : '', onclick: () => { t.order = t.sort === k && t.order === 'asc' ? 'desc' : 'asc'; t.sort = k; t.offset = 0; loadOfferings(); } }, label)
      : h('th', {}, label);
    $('#page').append(
      h('h1', {}, 'Offerings'),
      h('p', { id: 'last-refresh', class: 'muted' }),
      h('div', { class: 'toolbar' },
        h('input', { id: 'offer-filter', type: 'search', placeholder: 'filter: cloud, region, GPU…', value: t.q, oninput: debounce((e) => { t.q = e.target.value; t.offset = 0; loadOfferings(); }, 200) }),
        h('label', {}, h('input', { type: 'checkbox', checked: t.unavailable, onchange: (e) => { t.unavailable = e.target.checked; t.offset = 0; loadOfferings(); } }), ' only unavailable'),
        h('span', { id: 'offer-count', class: 'muted' })),
      h('div', { class: 'scroll' }, h('table', { id: 'offerings-table' }, h('thead', {}, h('tr', {},
        th('cloud', 'Cloud'), h('th', {}, 'Region'), h('th', {}, 'Instance'), h('th', {}, 'Capacity'), h('th', {}, 'GPUs'),
        th('price', '$/h'), th('price_per_gpu', '$/GPU-h'), th('availability', 'Availability'), h('th', {}, 'Price source'))), h('tbody', {}))),
      h('div', { class: 'pager' },
        h('button', { id: 'offer-prev', type: 'button', onclick: () => { t.offset = Math.max(0, t.offset - t.limit); loadOfferings(); } }, '← previous'),
        h('span', { id: 'offer-range', class: 'muted' }),
        h('button', { id: 'offer-next', type: 'button', onclick: () => { t.offset += t.limit; loadOfferings(); } }, 'next →')));
    loadOfferings();
  }

  async function loadOfferings() {
    const t = state.offers;
    const qs = new URLSearchParams({ limit: t.limit, offset: t.offset, sort: t.sort, order: t.order, unavailable: t.unavailable });
    if (t.q) qs.set('q', t.q);
    let page;
    try { page = await api('/v1/dashboard/offerings?' + qs); } catch (e) { showError(e.message); return; }
    if (current().name !== 'offerings') return;
    document.querySelectorAll('#offerings-table th[data-sort]').forEach((x) => { x.className = x.dataset.sort === t.sort ? 'sorted ' + t.order : ''; });
    const r = page.last_refresh;
    $('#last-refresh').textContent = (r ? 'Last price change (' + when(r.at) + '): ' + r.message : 'No price change seen since fleetd started.') + ' ' + page.unavailable + ' of ' + page.total + ' offerings marked unavailable.';
    $('#offerings-table tbody').replaceChildren(...page.rows.map((o) => h('tr', { class: o.availability === 'unavailable' ? 'bad' : '' },
      h('td', {}, o.cloud), h('td', {}, o.region), h('td', {}, o.instance_type), h('td', {}, o.capacity), h('td', {}, o.gpus + '× ' + o.gpu),
      h('td', { class: 'num' }, money(o.price_per_hour)), h('td', { class: 'num' }, money(o.price_per_gpu_hour)),
      h('td', {}, o.availability + (o.unavailable_because ? ': ' + o.unavailable_because : '')),
      h('td', { class: 'muted' }, o.source + ', ' + o.as_of))));
    $('#offer-count').textContent = page.matched + ' of ' + page.total + ' offerings';
    $('#offer-range').textContent = page.matched ? (page.offset + 1) + '–' + Math.min(page.offset + page.limit, page.matched) + ' of ' + page.matched : '';
    $('#offer-prev').disabled = page.offset === 0;
    $('#offer-next').disabled = page.offset + page.limit >= page.matched;
  }

  // ---- events -------------------------------------------------------------------------------------

  function eventList(events, id) {
    return h('ol', { class: 'timeline', id: id }, events.map((e) => h('li', { 'data-kind': e.kind, 'data-event': e.id },
      h('time', { datetime: e.at }, when(e.at)), ' ', h('span', { class: 'kind k-' + e.kind }, e.kind), ' ',
      e.app ? h('span', { class: 'muted' }, e.app + ' ') : null,
      e.node !== undefined && e.node !== null ? h('a', { href: '#/nodes/' + e.node }, 'node ' + e.node) : null, ' ',
      h('span', { class: 'message' }, e.message))));
  }

  async function drawEvents() {
    const kinds = ['', 'planned', 'launched', 'launch-failed', 'ready', 'draining', 'terminated', 'instance-lost', 'not-placed', 'budget-held', 'consolidating', 'orphan-collected', 'operator', 'price-changed'];
    $('#page').append(h('h1', {}, 'Events'),
      h('div', { class: 'toolbar' }, h('label', {}, 'kind ', h('select', { id: 'event-kind', onchange: (e) => { state.events.kind = e.target.value; showEvents(); } },
        kinds.map((k) => h('option', { value: k, selected: state.events.kind === k }, k || 'all')))), h('span', { class: 'muted' }, 'the newest 200, newest first; new ones appear as they happen')),
      h('div', { id: 'events-box' }));
    try {
      state.events.list = await api('/v1/events?last=200');
    } catch (e) { showError(e.message); return; }
    state.lastEvent = state.events.list.length ? state.events.list[state.events.list.length - 1].id : (state.overview && state.overview.last_event);
    showEvents();
  }

  async function moreEvents() {
    const after = state.lastEvent;
    state.lastEvent = state.overview.last_event;
    try {
      const fresh = await api('/v1/events' + (after !== null && after !== undefined ? '?after=' + after : '?last=200'));
      state.events.list = state.events.list.concat(fresh).slice(-200);
      if (current().name === 'events') showEvents();
    } catch (e) { showError(e.message); }
  }

  function showEvents() {
    const box = $('#events-box');
    if (!box) return;
    const list = state.events.list.filter((e) => !state.events.kind || e.kind === state.events.kind).slice().reverse();
    box.replaceChildren(list.length ? eventList(list, 'events') : h('p', { class: 'muted', id: 'events' }, 'No events.'));
  }

  // ---- start ----------------------------------------------------------------------------------------

  window.addEventListener('hashchange', route);
  $('#login').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('#token').value.trim();
    $('#token').value = '';
    if (t) login(t);
  });
  $('#logout').addEventListener('click', () => logout(''));
  if (state.token) login(state.token);
  else logout('');
})();
