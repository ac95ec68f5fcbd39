// fleet's charts: small SVG charts drawn in the browser, shared by fleetd's dashboard and the
// page `fleetsim run --html` writes. No library and nothing fetched: both pages must work with no
// network (fleetd's is served under a content security policy that allows only its own files).
//
// Every chart has a title, axis labels and units:
//   FleetCharts.line(container, {
//     title, x: {label, unit, time}, y: {label, unit, min, max},
//     series: [{name, points: [[x, y], ...], dashed}], stacked, step, empty,
//   })
//   FleetCharts.bars(container, {title, x: {label, unit}, y: {label}, items: [{name, value}]})
// `x.time`: x values are milliseconds since the epoch, labelled as the viewer's local time.
(function (global) {
  'use strict';
  const NS = 'http://www.w3.org/2000/svg';
  const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
  const W = 640, H = 260, M = { l: 64, r: 14, t: 30, b: 46 };

  function svg(name, attrs, parent, text) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  // Round tick steps (1, 2, 5 × 10^k) covering [min, max].
  function ticks(min, max, n) {
    if (!(max > min)) { max = min + 1; }
    const raw = (max - min) / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // Time ticks on round seconds, minutes or hours (local time), about `n` of them.
  const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);
  function timeTicks(t0, t1, n) {
    const step = STEPS.find((s) => (t1 - t0) / s <= n) || STEPS[STEPS.length - 1];
    const offset = new Date(t0).getTimezoneOffset() * 60000;
    const out = [];
    for (let t = Math.ceil((t0 - offset) / step) * step + offset; t <= t1; t += step) out.push(t);
    return out;
  }

  function num(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(0) + 'k';
    if (a >= 100 || v === Math.round(v)) return String(Math.round(v * 100) / 100);
    return v.toPrecision(3).replace(/\.?0+$/, '');
  }

  function clock(ms) {
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + (ms % 60000 ? ':' + p(d.getSeconds()) : '');
  }

  function axisLabel(a) {
    return a.unit ? a.label + ' (' + a.unit + ')' : a.label;
  }

  function frame(container, opt) {
    container.textContent = '';
    container.classList.add('chart');
    container.setAttribute('data-chart', opt.title);
    const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', preserveAspectRatio: 'xMidYMid meet' }, container);
    svg('title', {}, root, opt.title);
    svg('text', { x: 4, y: 18, class: 'chart-title' }, root, opt.title);
    return root;
  }

  function legend(container, names) {
    if (names.length < 2) return;
    const div = document.createElement('div');
    div.className = 'legend';
    names.forEach((n, i) => {
      const s = document.createElement('span');
      const sw = document.createElement('i');
      sw.style.background = COLOURS[i % COLOURS.length];
      s.appendChild(sw);
      s.appendChild(document.createTextNode(n));
      div.appendChild(s);
    });
    container.appendChild(div);
  }

  function line(container, opt) {
    const root = frame(container, opt);
    let series = (opt.series || []).map((s) => ({ name: s.name, dashed: s.dashed, points: (s.points || []).filter((p) => p[1] !== null && p[1] !== undefined && isFinite(p[1])) }));
    if (opt.stacked) {
      // Stack on shared x values: each series is drawn at the sum of those before it and itself.
      const base = new Map();
      series = series.map((s) => ({ name: s.name, points: s.points.map(([x, y]) => { const b = (base.get(x) || 0) + y; base.set(x, b); return [x, b]; }) }));
    }
    const all = series.flatMap((s) => s.points);
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    let x0 = xs.length ? Math.min(...xs) : 0, x1 = xs.length ? Math.max(...xs) : 1;
    if (x1 === x0) { x1 = x0 + (opt.x.time ? 60000 : 1); }
    let y0 = opt.y.min !== undefined ? opt.y.min : Math.min(0, ...ys);
    let y1 = opt.y.max !== undefined ? opt.y.max : Math.max(1e-9, ...ys) * 1.1;
    if (!(y1 > y0)) y1 = y0 + 1;
    const px = (x) => M.l + ((x - x0) / (x1 - x0)) * (W - M.l - M.r);
    const py = (y) => H - M.b - ((y - y0) / (y1 - y0)) * (H - M.t - M.b);
    const g = svg('g', { class: 'axes' }, root);
    ticks(y0, y1, 4).forEach((v) => {
      svg('line', { x1: M.l, x2: W - M.r, y1: py(v), y2: py(v), class: 'grid' }, g);
      svg('text', { x: M.l - 6, y: py(v) + 4, 'text-anchor': 'end', class: 'tick' }, g, num(v));
    });
    let xt = opt.x.time ? timeTicks(x0, x1, 5) : ticks(x0, x1, 6);
    xt.filter((v) => v >= x0 && v <= x1).forEach((v) => {
      svg('line', { x1: px(v), x2: px(v), y1: H - M.b, y2: H - M.b + 4, class: 'axis' }, g);
      svg('text', { x: px(v), y: H - M.b + 16, 'text-anchor': 'middle', class: 'tick' }, g, opt.x.time ? clock(v) : num(v));
    });
    svg('line', { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: 'axis' }, g);
    svg('line', { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, class: 'axis' }, g);
    svg('text', { x: (M.l + W - M.r) / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis-label' }, g, axisLabel(opt.x.time ? { label: opt.x.label || 'time', unit: opt.x.unit || 'local, hh:mm' } : opt.x));
    svg('text', { x: 14, y: (M.t + H - M.b) / 2, 'text-anchor': 'middle', class: 'axis-label', transform: 'rotate(-90 14 ' + (M.t + H - M.b) / 2 + ')' }, g, axisLabel(opt.y));
    let drawn = 0;
    // Stacked areas are drawn top series first so each lower one shows over it.
    const order = series.map((s, i) => i);
    if (opt.stacked) order.reverse();
    order.forEach((i) => {
      const s = series[i];
      if (!s.points.length) return;
      const colour = COLOURS[i % COLOURS.length];
      let d = '';
      s.points.forEach(([x, y], k) => {
        if (opt.step && k > 0) d += 'H' + px(x).toFixed(1) + 'V' + py(y).toFixed(1);
        else d += (k ? 'L' : 'M') + px(x).toFixed(1) + ',' + py(y).toFixed(1);
      });
      if (opt.stacked) {
        const last = s.points[s.points.length - 1], first = s.points[0];
        svg('path', { d: d + 'L' + px(last[0]).toFixed(1) + ',' + py(y0) + 'L' + px(first[0]).toFixed(1) + ',' + py(y0) + 'Z', fill: colour, 'fill-opacity': 0.35, stroke: 'none' }, root);
      }
      const p = svg('path', { d: d, fill: 'none', stroke: colour, 'stroke-width': 2, class: 'series' }, root);
      if (s.dashed) p.setAttribute('stroke-dasharray', '6 4');
      if (s.points.length === 1) svg('circle', { cx: px(s.points[0][0]), cy: py(s.points[0][1]), r: 3, fill: colour }, root);
      drawn += s.points.length;
    });
    if (!drawn) svg('text', { x: (M.l + W - M.r) / 2, y: (M.t + H - M.b) / 2, 'text-anchor': 'middle', class: 'empty' }, root, opt.empty || 'no data yet');
    root.setAttribute('data-points', String(drawn));
    legend(container, series.map((s) => s.name));
  }

  // Horizontal bars, one per item, labelled with its value.
  function bars(container, opt) {
    const items = opt.items || [];
    const h = Math.max(90, M.t + 30 + items.length * 22 + 40);
    const root = frame(container, opt);
    root.setAttribute('viewBox', '0 0 ' + W + ' ' + h);
    const left = 150, right = W - 60;
    const max = Math.max(1e-9, ...items.map((i) => i.value));
    const xt = ticks(0, max, 4);
    const top = xt[xt.length - 1] || max;
    const px = (v) => left + (v / top) * (right - left);
    xt.forEach((v) => {
      svg('line', { x1: px(v), x2: px(v), y1: M.t, y2: h - 40, class: 'grid' }, root);
      svg('text', { x: px(v), y: h - 26, 'text-anchor': 'middle', class: 'tick' }, root, num(v));
    });
    items.forEach((it, k) => {
      const y = M.t + 8 + k * 22;
      svg('text', { x: left - 6, y: y + 13, 'text-anchor': 'end', class: 'tick' }, root, it.name);
      svg('rect', { x: left, y: y, width: Math.max(0, px(it.value) - left), height: 16, fill: COLOURS[k % COLOURS.length] }, root);
      svg('text', { x: px(it.value) + 4, y: y + 13, class: 'tick' }, root, num(it.value));
    });
    if (!items.length) svg('text', { x: W / 2, y: M.t + 24, 'text-anchor': 'middle', class: 'empty' }, root, opt.empty || 'none');
    svg('text', { x: (left + right) / 2, y: h - 6, 'text-anchor': 'middle', class: 'axis-label' }, root, axisLabel(opt.x));
    if (opt.y) svg('text', { x: 14, y: (M.t + h - 40) / 2, 'text-anchor': 'middle', class: 'axis-label', transform: 'rotate(-90 14 ' + (M.t + h - 40) / 2 + ')' }, root, axisLabel(opt.y));
    root.setAttribute('data-points', String(items.length));
  }

  global.FleetCharts = { line: line, bars: bars, COLOURS: COLOURS, num: num };
})(typeof window !== 'undefined' ? window : this);
