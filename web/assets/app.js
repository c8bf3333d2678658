// meshbridge web page: one small single-page app, no framework, no build step.
// It talks only to the box's JSON API (web/API.md). Everything is embedded in
// the firmware binary, so nothing here may load from the internet.
'use strict';

const POLL_MS = 3000;
const GRAPH_POINTS = 40;

const state = {
  session: null,      // last answer of GET /api/session
  csrf: null,
  renderId: 0,        // bumped on every navigation: stale async work checks it
  timers: [],         // cleared on every navigation
  status: null,       // last GET /api/status answer
  traffic: {},        // peer key -> [{t, rx, tx}] samples for the sparkline
  nextAfterLogin: '/',
  confUrl: null,
};

// ---------------------------------------------------------------- helpers --

function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  add(el, kids);
  return el;
}

function add(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

// Replace an element's children; null/false children are skipped (replaceChildren would print "null").
function fill(el, ...kids) { el.replaceChildren(); return add(el, kids); }

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function svgEl(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

function fmtBytes(n) {
  if (typeof n !== 'number' || !isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
}

function fmtRate(n) { return fmtBytes(n) + '/s'; }

function fmtSpan(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.round(s / 60) + ' min';
  if (s < 86400) { const hh = Math.floor(s / 3600), m = Math.round((s % 3600) / 60); return m && hh < 10 ? `${hh} h ${m} min` : `${hh} h`; }
  const d = Math.floor(s / 86400), hh = Math.round((s % 86400) / 3600);
  return hh ? `${d} d ${hh} h` : `${d} d`;
}

function ago(s) { return (s === null || s === undefined) ? 'never' : fmtSpan(s) + ' ago'; }
function inSpan(s) {
  if (s === null || s === undefined) return '–';
  return s <= 0 ? 'expired' : 'in ' + fmtSpan(s);
}
function lines(text) { return text.split('\n').map((l) => l.trim()).filter(Boolean); }
function sameJson(a, b) { return JSON.stringify(a) === JSON.stringify(b); }
function macId(mac) { return String(mac).replace(/[^0-9a-zA-Z]/g, '').toLowerCase(); }

function setBanner(text, kind) {
  const b = $('#banner');
  b.textContent = text || '';
  b.className = 'banner ' + (kind || '');
  b.hidden = !text;
}

// ------------------------------------------------------------------- API --

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super((body && body.error) || `The box answered ${status}.`);
    this.status = status;
    this.body = body || {};
    this.field = this.body.field || null;
    this.retryAfter = retryAfter;
  }
}

// opts.quiet401: the caller handles 401 itself (login, setup, wrong current password).
async function api(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  let payload;
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  if (typeof body === 'string') { headers['Content-Type'] = opts.type || 'text/plain'; payload = body; }
  else if (body !== undefined) { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: 'same-origin', cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, { error: 'Cannot reach the box. Is it running, and is this device still connected to it?' });
  }
  if (opts.raw && res.ok) return res;
  let data = null;
  const ct = res.headers.get('content-type') || '';
  if (ct.includes('json')) data = await res.json().catch(() => null);
  else if (!res.ok) { const t = await res.text().catch(() => ''); data = { error: t.trim().slice(0, 300) || null }; }
  if (res.status === 401 && !(opts.quiet401 || (data && data.field))) {
    state.session = { setup_required: !!(data && data.setup_required), authenticated: false };
    state.csrf = null;
    if (!['/login', '/setup'].includes(location.pathname)) state.nextAfterLogin = location.pathname;
    navigate(data && data.setup_required ? '/setup' : '/login', true);
    throw new ApiError(401, data);
  }
  if (res.status === 403 && !opts.retried && method !== 'GET') {
    // The CSRF token may be stale (e.g. the session was renewed): fetch it again once.
    await loadSession().catch(() => {});
    if (state.session && state.session.authenticated) return api(method, path, body, { ...opts, retried: true });
  }
  if (!res.ok) {
    const ra = res.headers.get('retry-after');
    const err = new ApiError(res.status, data, ra ? parseInt(ra, 10) : null);
    if (res.status === 429 && ra && !(data && data.error)) err.message = `Too many attempts. Try again in ${fmtSpan(parseInt(ra, 10))}.`;
    throw err;
  }
  return data || {};
}

async function loadSession() {
  const s = await api('GET', '/api/session', undefined, { quiet401: true });
  state.session = s;
  state.csrf = s.csrf || null;
  return s;
}

// ------------------------------------------------------- forms and errors --

function field(key, label, input, hint) {
  return h('div', { class: 'field', dataset: { field: key } },
    h('label', { for: input.id }, label), input,
    hint ? h('p', { class: 'hint' }, hint) : null,
    h('p', { class: 'field-error', role: 'alert' }));
}

// A text input with its button on the same line (rename, create token).
function fieldRow(key, label, input, button, hint) {
  return h('div', { class: 'field', dataset: { field: key } },
    h('label', { for: input.id }, label), h('div', { class: 'inputrow' }, input, button),
    hint ? h('p', { class: 'hint' }, hint) : null,
    h('p', { class: 'field-error', role: 'alert' }));
}

function checkField(key, label, input, hint) {
  return h('div', { class: 'field check', dataset: { field: key } },
    h('label', { class: 'checkline' }, input, h('span', {}, label)),
    hint ? h('p', { class: 'hint' }, hint) : null,
    h('p', { class: 'field-error', role: 'alert' }));
}

function formError() { return h('p', { class: 'form-error', role: 'alert' }); }
function formOk() { return h('p', { class: 'form-ok', role: 'status' }); }

function clearErrors(root) {
  for (const e of $$('.field-error, .form-error', root)) e.textContent = '';
  for (const e of $$('.invalid', root)) e.classList.remove('invalid');
  for (const e of $$('.form-ok', root)) e.textContent = '';
}

// Show an error next to the field it names, else at the form's top.
function showError(root, err, fallbackField) {
  const key = err.field || fallbackField;
  let wrap = null;
  if (key) {
    wrap = root.querySelector(`[data-field="${CSS.escape(key)}"]`) ||
      root.querySelector(`[data-field="${CSS.escape(String(key).split(/[[.]/)[0])}"]`);
    if (!wrap) {
      const base = String(key).replace(/\[.*$/, '');
      wrap = root.querySelector(`[data-field="${CSS.escape(base)}"]`);
    }
  }
  const msg = err.message || 'Something went wrong.';
  if (wrap) {
    wrap.classList.add('invalid');
    $('.field-error', wrap).textContent = msg;
    const inp = $('input, textarea, select', wrap);
    if (inp) inp.focus();
    return;
  }
  const fe = $('.form-error', root);
  if (fe) fe.textContent = msg; else setBanner(msg, 'bad');
}

// Run fn with every button of `root` disabled; errors go next to their field.
async function busy(root, fn) {
  const buttons = $$('button, input[type=submit]', root).filter((b) => !b.disabled);
  buttons.forEach((b) => { b.disabled = true; });
  root.classList && root.classList.add('busy');
  try {
    clearErrors(root);
    return await fn();
  } catch (err) {
    // A plain 401 already sent the browser to the login page.
    if (!(err instanceof ApiError && err.status === 401 && !err.field)) showError(root, err);
    return undefined;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    root.classList && root.classList.remove('busy');
  }
}

function localError(message, fieldKey) {
  const e = new ApiError(422, { error: message, field: fieldKey });
  return e;
}

function download(filename, text, type) {
  const blob = text instanceof Blob ? text : new Blob([text], { type: type || 'text/plain' });
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
}

function copyButton(getText, label = 'Copy') {
  const b = h('button', { type: 'button', class: 'btn small', text: label });
  b.addEventListener('click', async () => {
    const text = getText();
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // Not a secure context (plain http to an IP address): fall back to a hidden textarea.
      const ta = h('textarea', { class: 'offscreen' }, text);
      document.body.append(ta); ta.select();
      try { document.execCommand('copy'); } catch (_) { /* nothing more to try */ }
      ta.remove();
    }
    b.textContent = 'Copied';
    setTimeout(() => { b.textContent = label; }, 1500);
  });
  return b;
}

// ----------------------------------------------------------------- router --

const PAGES = {
  '/': { title: 'Status', view: viewStatus },
  '/devices': { title: 'Devices', view: viewDevices },
  '/peers': { title: 'Peers', view: viewPeers },
  '/settings': { title: 'Settings', view: viewSettings },
  '/discovery': { title: 'Discovery', view: viewDiscovery },
  '/system': { title: 'System', view: viewSystem },
  '/login': { title: 'Log in', view: viewLogin, open: true },
  '/setup': { title: 'Set a password', view: viewSetup, open: true },
};

function navigate(path, replace) {
  if (path !== location.pathname) {
    if (replace) history.replaceState(null, '', path); else history.pushState(null, '', path);
  }
  render();
}

function stopTimers() {
  state.timers.forEach((t) => clearInterval(t));
  state.timers = [];
}

function every(ms, fn) {
  const id = setInterval(fn, ms);
  state.timers.push(id);
}

async function render() {
  stopTimers();
  const id = ++state.renderId;
  setBanner('');
  let path = location.pathname.replace(/\/+$/, '') || '/';
  if (!PAGES[path]) path = '/';
  if (!state.session) {
    try { await loadSession(); } catch (err) {
      main().replaceChildren(h('div', { class: 'card' }, h('h1', {}, 'Cannot reach the box'),
        h('p', {}, err.message), h('button', { class: 'btn', onclick: () => location.reload() }, 'Try again')));
      return;
    }
    if (id !== state.renderId) return;
  }
  const s = state.session;
  let want = path;
  if (s.setup_required) want = '/setup';
  else if (!s.authenticated) want = path === '/login' ? path : '/login';
  else if (PAGES[path].open) want = state.nextAfterLogin || '/';
  if (!s.authenticated && !PAGES[path].open) state.nextAfterLogin = path;
  if (want !== location.pathname) history.replaceState(null, '', want);
  const page = PAGES[want];
  document.title = `${page.title} · meshbridge`;
  const authed = s.authenticated && !s.setup_required;
  $('#nav').hidden = !authed;
  document.body.dataset.page = want === '/' ? 'status' : want.slice(1);
  for (const a of $$('#nav a')) {
    if (a.getAttribute('href') === want) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const m = main();
  fill(m, h('p', { class: 'muted loading' }, 'Loading…'));
  try {
    await page.view(m, () => id === state.renderId);
  } catch (err) {
    if (id !== state.renderId || (err instanceof ApiError && err.status === 401)) return;
    fill(m, h('div', { class: 'card' }, h('h1', {}, page.title), h('p', { class: 'form-error' }, err.message),
      h('button', { class: 'btn', onclick: () => render() }, 'Try again')));
  }
}

function main() { return $('#main'); }

function pageHead(title, ...extra) {
  return h('div', { class: 'page-head' }, h('h1', {}, title), ...extra);
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest('a[data-link]');
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', () => render());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && document.body.dataset.page === 'status') render();
  else if (document.visibilityState !== 'visible') stopTimers();
});

// ------------------------------------------------------------ login/setup --

function authCard(title, intro, form) {
  return h('div', { class: 'auth' }, h('div', { class: 'card' }, h('h1', {}, title), intro, form));
}

function viewLogin(m) {
  const pw = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, autofocus: true });
  const form = h('form', { id: 'login-form', novalidate: true },
    field('password', 'Password', pw),
    formError(),
    h('button', { class: 'btn primary wide', type: 'submit', id: 'login-submit' }, 'Log in'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      if (!pw.value) throw localError('Enter the password.', 'password');
      try {
        const r = await api('POST', '/api/login', { password: pw.value }, { quiet401: true });
        if (r.csrf) state.csrf = r.csrf;
      } catch (err) {
        if (err.status === 401) { err.field = 'password'; err.message = (err.body && err.body.error) || 'Wrong password.'; }
        if (err.status === 429) err.field = 'password';
        pw.select();
        throw err;
      }
      await loadSession();
      navigate(state.nextAfterLogin || '/', true);
    });
  });
  fill(m, authCard('Log in', h('p', { class: 'muted' }, 'Log in to manage this meshbridge box.'), form));
  pw.focus();
}

function viewSetup(m) {
  const code = h('input', { id: 'setup-code', name: 'setup_code', autocomplete: 'one-time-code', required: true, autocapitalize: 'characters', spellcheck: 'false', placeholder: 'ABCD-EFGH' });
  const pw = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: '8' });
  const pw2 = h('input', { id: 'password-repeat', name: 'password_repeat', type: 'password', autocomplete: 'new-password', required: true });
  const form = h('form', { id: 'setup-form', novalidate: true },
    field('setup_code', 'Setup code', code, h('span', {}, 'Stored in the file ', h('code', {}, 'setup-code'), ' in the box\'s state directory (readable by root only; the log says where; on a Raspberry Pi image also on the boot partition).')),
    field('password', 'New admin password', pw, 'At least 8 characters.'),
    field('password_repeat', 'Repeat password', pw2),
    formError(),
    h('button', { class: 'btn primary wide', type: 'submit', id: 'setup-submit' }, 'Set password'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      if (!code.value.trim()) throw localError('Enter the setup code.', 'setup_code');
      if (pw.value.length < 8) throw localError('The password needs at least 8 characters.', 'password');
      if (pw.value !== pw2.value) throw localError('The two passwords differ.', 'password_repeat');
      try {
        const r = await api('POST', '/api/setup', { setup_code: code.value.trim(), password: pw.value }, { quiet401: true });
        if (r.csrf) state.csrf = r.csrf;
      } catch (err) {
        if (err.status === 401) { err.field = 'setup_code'; err.message = (err.body && err.body.error) || 'Wrong setup code.'; }
        if (err.status === 429) err.field = 'setup_code';
        throw err;
      }
      await loadSession();
      if (!state.session.authenticated) { navigate('/login', true); return; }
      state.nextAfterLogin = '/';
      navigate('/', true);
    });
  });
  fill(m, authCard('Welcome to meshbridge',
    h('p', { class: 'muted' }, 'Set the admin password for this box. To prove you are at the box, enter its one-time setup code.'), form));
  code.focus();
}

$('#logout').addEventListener('click', async (ev) => {
  const b = ev.currentTarget;
  b.disabled = true;
  try { await api('POST', '/api/logout', {}, { quiet401: true }); } catch (_) { /* logged out anyway */ }
  b.disabled = false;
  state.session = { setup_required: false, authenticated: false };
  state.csrf = null;
  state.nextAfterLogin = '/';
  navigate('/login');
});

// ----------------------------------------------------------------- status --

function noteStatus(s) {
  state.status = s;
  if (s.box && s.box.hostname) $('#box-name').textContent = s.box.hostname;
}

function peerKey(p) { return p.public_key || p.name; }

function recordTraffic(peers) {
  const now = performance.now() / 1000;
  const seen = new Set();
  for (const p of peers || []) {
    const k = peerKey(p);
    seen.add(k);
    const list = state.traffic[k] || (state.traffic[k] = []);
    list.push({ t: now, rx: p.rx_bytes || 0, tx: p.tx_bytes || 0 });
    if (list.length > GRAPH_POINTS + 1) list.splice(0, list.length - GRAPH_POINTS - 1);
  }
  for (const k of Object.keys(state.traffic)) if (!seen.has(k)) delete state.traffic[k];
}

function rates(k) {
  const list = state.traffic[k] || [];
  const out = [];
  for (let i = 1; i < list.length; i++) {
    const dt = list[i].t - list[i - 1].t;
    if (dt <= 0) continue;
    out.push({ rx: Math.max(0, list[i].rx - list[i - 1].rx) / dt, tx: Math.max(0, list[i].tx - list[i - 1].tx) / dt });
  }
  return out;
}

function sparkline(k) {
  const r = rates(k);
  const W = 120, H = 30;
  const svg = svgEl('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img' });
  const last = r[r.length - 1];
  const label = last ? `receive ${fmtRate(last.rx)}, send ${fmtRate(last.tx)}` : 'collecting traffic samples';
  svg.setAttribute('aria-label', label);
  svg.append(svgEl('title'));
  svg.firstChild.textContent = label;
  svg.append(svgEl('line', { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: 'base' }));
  if (r.length < 1) return svg;
  const max = Math.max(1, ...r.map((p) => Math.max(p.rx, p.tx)));
  // Scrolls in from the right; until there are 6 samples they are spread wider.
  const step = W / (Math.min(GRAPH_POINTS, Math.max(6, r.length)) - 1);
  const x0 = W - (r.length - 1) * step;
  for (const dir of ['rx', 'tx']) {
    const pts = r.map((p, i) => `${(x0 + i * step).toFixed(1)},${(H - 1 - (p[dir] / max) * (H - 3)).toFixed(1)}`);
    if (pts.length === 1) pts.unshift(`${(x0 - step).toFixed(1)},${pts[0].split(',')[1]}`);
    if (dir === 'rx') svg.append(svgEl('polygon', { points: `${pts[0].split(',')[0]},${H} ${pts.join(' ')} ${W},${H}`, class: 'area' }));
    svg.append(svgEl('polyline', { points: pts.join(' '), class: dir }));
  }
  return svg;
}

function dot(on, text) {
  return h('span', { class: 'state' }, h('span', { class: 'dot ' + (on ? 'on' : 'off'), 'aria-hidden': 'true' }), text);
}

function table(cls, headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted empty' }, empty);
  return h('div', { class: 'table-wrap' }, h('table', { class: 'rtable ' + cls },
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function td(label, ...kids) { return h('td', { dataset: { label } }, ...kids); }

function deviceName(d) {
  if (d.name && d.hostname && d.name !== d.hostname) return [d.name, ' ', h('span', { class: 'muted' }, `(${d.hostname})`)];
  return d.name || d.hostname || h('span', { class: 'muted' }, 'unnamed');
}

function boxCard(b) {
  const kv = (k, v) => (v === null || v === undefined || v === '') ? null : [h('dt', {}, k), h('dd', {}, v)];
  return h('section', { class: 'card', id: 'box-info' }, h('h2', {}, 'This box'),
    h('dl', { class: 'kv' },
      kv('Hostname', b.hostname), kv('Version', b.version), kv('Board', b.board),
      kv('Mesh address', b.mesh_address),
      kv('Bridge', b.bridge ? `${b.bridge}${b.bridge_address ? ' (' + b.bridge_address + ')' : ''}` : b.bridge_address),
      kv('WireGuard port', b.listen_port !== undefined ? `UDP ${b.listen_port}` : null),
      kv('Public endpoint', b.endpoint),
      kv('Up for', typeof b.uptime_s === 'number' ? fmtSpan(b.uptime_s) : null),
      kv('Public key', b.public_key ? h('span', { class: 'keyline' }, h('code', { class: 'key' }, b.public_key), copyButton(() => b.public_key)) : null)));
}

function peersCard(peers) {
  const rows = peers.map((p) => {
    const last = (rates(peerKey(p)).slice(-1)[0]) || null;
    const stateText = p.enabled === false ? 'disabled' : (p.online ? 'online' : 'offline');
    return h('tr', { class: p.enabled === false ? 'disabled' : '', dataset: { peer: p.name } },
      td('Peer', dot(p.online && p.enabled !== false, ''), h('strong', {}, p.name)),
      td('State', stateText),
      td('Endpoint', p.endpoint || h('span', { class: 'muted' }, 'unknown')),
      td('Handshake', ago(p.last_handshake_s)),
      td('Received', fmtBytes(p.rx_bytes)),
      td('Sent', fmtBytes(p.tx_bytes)),
      td('Traffic', h('span', { class: 'graph' }, sparkline(peerKey(p)),
        h('small', { class: 'rate' }, last ? `↓${fmtRate(last.rx)} ↑${fmtRate(last.tx)}` : ''))));
  });
  return h('section', { class: 'card', id: 'status-peers' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Mesh peers'), h('a', { href: '/peers', 'data-link': true, class: 'btn small' }, 'Add or manage')),
    table('peers', ['Peer', 'State', 'Endpoint', 'Latest handshake', 'Received', 'Sent', 'Traffic'], rows,
      'No peers yet. Add a phone or laptop on the Peers page.'));
}

function devicesCard(devices) {
  const rows = devices.map((d) => h('tr', { class: d.active === false ? 'inactive' : '', dataset: { mac: d.mac } },
    td('Device', dot(d.active !== false, ''), h('strong', {}, deviceName(d)), d.pinned ? h('span', { class: 'tag' }, 'pinned') : null),
    td('MAC', h('code', {}, d.mac)),
    td('Mesh address', d.ip || '–'),
    td('Lease', inSpan(d.expires_in_s)),
    td('Last seen', ago(d.last_seen_s))));
  return h('section', { class: 'card', id: 'status-devices' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Bridged devices'), h('a', { href: '/devices', 'data-link': true, class: 'btn small' }, 'Manage')),
    table('devices', ['Device', 'MAC', 'Mesh address', 'Lease expires', 'Last seen'], rows,
      'No devices yet. Plug a printer or TV into the box\'s bridge port; it appears here when it asks for an address.'));
}

const WIFI_STATES = { starting: 'starting', running: 'on', restarting: 'restarting', 'waiting-for-uplink': 'waiting for the uplink', off: 'off', openwrt: 'OpenWrt wireless', failed: 'failed' };

function wifiCard(w) {
  const rows = (w.clients || []).map((c) => h('tr', { dataset: { wifiClient: c.mac } },
    td('Device', dot(!!c.authorized, ''), h('strong', {}, c.name || c.ip || c.mac)),
    td('MAC', h('code', {}, c.mac)),
    td('Mesh address', c.ip || '–'),
    td('Signal', c.signal_dbm === undefined || c.signal_dbm === null ? '–' : `${c.signal_dbm} dBm`),
    td('Connected', c.connected_s === undefined || c.connected_s === null ? '–' : fmtSpan(c.connected_s))));
  return h('section', { class: 'card', id: 'status-wifi' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Wi-Fi ', h('span', { class: 'tag ' + (w.state === 'running' ? 'ok' : 'bad'), id: 'wifi-state' }, WIFI_STATES[w.state] || w.state)),
      h('a', { href: '/settings', 'data-link': true, class: 'btn small' }, 'Settings')),
    h('p', { class: 'muted' }, `“${w.ssid}” on ${w.interface}, channel ${w.channel}` + (w.follows ? ` (the uplink ${w.follows}'s)` : '') + `, ${w.security}.`),
    w.error ? h('p', { class: 'muted', id: 'wifi-error' }, w.error) : null,
    table('wifi-clients', ['Device', 'MAC', 'Mesh address', 'Signal', 'Connected'], rows, 'No Wi-Fi clients.'));
}

const TAILNET_STATES = { starting: 'connecting', 'needs-login': 'needs login', 'logged-in': 'logged in', 'logged-out': 'logged out', error: 'error' };

// The join form (paste an auth key) is made once and kept across the status
// page's redraws, so a half-typed key and its error message survive them.
let tailnetJoin = null;

function tailnetJoinForm() {
  if (tailnetJoin) return tailnetJoin;
  const key = h('input', { id: 'tailnet-auth-key', name: 'auth_key', type: 'password', autocomplete: 'off',
    spellcheck: 'false', maxlength: '512', placeholder: 'tskey-auth-… or hskey-auth-…' });
  const go = h('button', { class: 'btn', type: 'submit', id: 'tailnet-join' }, 'Join');
  const form = h('form', { novalidate: true, id: 'tailnet-join-form' },
    fieldRow('auth_key', 'Auth key', key, go,
      'A pre-auth key from the control server (headscale preauthkeys create, or Tailscale\'s admin console). It is used to register and not stored. Leave it empty to join with the configured key or get a login link.'),
    formError());
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      const k = key.value.trim();
      await api('POST', '/api/tailnet/login', k ? { auth_key: k } : {});
      key.value = '';
      key.blur();
      setBanner('Joining the tailnet…', 'info');
    });
  });
  tailnetJoin = form;
  return form;
}

function tailnetCard(t) {
  const kv = (k, v) => (v === null || v === undefined || v === '') ? null : [h('dt', {}, k), h('dd', {}, v)];
  const peers = t.peers || [];
  const online = peers.filter((p) => p.online === true).length;
  const direct = peers.filter((p) => p.direct).length;
  const out = h('button', { class: 'btn danger small', type: 'button', id: 'tailnet-logout' }, 'Log out of the tailnet');
  const err = formError();
  out.addEventListener('click', async () => {
    if (!confirm('Log this box out of the tailnet? Its tailnet peers lose it until it joins again (auth key or login link on this page).')) return;
    await busy(out.parentElement, async () => {
      await api('POST', '/api/tailnet/logout', {});
      setBanner('Logging out of the tailnet…', 'info');
    });
  });
  const rows = peers.map((p) => h('tr', { dataset: { tailnetPeer: p.name } },
    td('Peer', dot(p.online === true, ''), h('strong', {}, p.name)),
    td('Address', (p.addresses || []).map((a) => a.split('/')[0]).join(', ') || '–'),
    td('State', p.online === true ? 'online' : (p.online === false ? 'offline' : 'unknown')),
    td('Path', p.direct ? `direct ${p.direct}` : h('span', { class: 'muted' }, 'relay / none'))));
  return h('section', { class: 'card', id: 'status-tailnet' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Tailnet ', h('span', { class: 'tag ' + (t.state === 'logged-in' ? 'ok' : 'bad'), id: 'tailnet-state' }, TAILNET_STATES[t.state] || t.state)),
      t.state === 'logged-out' ? null : h('div', {}, out, err)),
    t.login_url ? h('p', { id: 'tailnet-login' }, 'This box waits for a login: ', h('a', { href: t.login_url, target: '_blank', rel: 'noopener' }, t.login_url),
      ' (open it, or have the tailnet admin approve it).') : null,
    t.state === 'logged-out' ? h('p', { class: 'muted' }, 'Logged out. Paste an auth key to join again (or leave it empty for a login link).') : null,
    t.error ? h('p', { class: 'muted', id: 'tailnet-error' }, t.error) : null,
    ['logged-out', 'needs-login', 'error'].includes(t.state) ? tailnetJoinForm() : null,
    h('dl', { class: 'kv' },
      kv('Control server', t.control_url), kv('Name', t.name || t.hostname),
      kv('Addresses', (t.addresses || []).join(', ')),
      kv('Peers', `${peers.length} (${online} online, ${direct} direct)`)),
    table('tailnet-peers', ['Peer', 'Address', 'State', 'Path'], rows, 'No tailnet peers.'));
}

const CHECK_NAMES = { dhcp: 'DHCP on the bridge', ip_forwarding: 'IP forwarding', uplink: 'Uplink', clock: 'Clock' };

function healthCard(health) {
  const bad = health.filter((c) => !c.ok).length;
  return h('section', { class: 'card', id: 'status-health' },
    h('h2', {}, 'Health ', h('span', { class: 'tag ' + (bad ? 'bad' : 'ok') }, bad ? `${bad} problem${bad > 1 ? 's' : ''}` : 'all good')),
    health.length ? h('ul', { class: 'health' }, health.map((c) => h('li', { class: c.ok ? 'ok' : 'bad', dataset: { check: c.check } },
      h('span', { class: 'icon', 'aria-hidden': 'true' }, c.ok ? '✓' : '!'),
      h('div', {}, h('strong', {}, CHECK_NAMES[c.check] || c.check), h('p', {}, c.message || (c.ok ? 'OK' : 'Failing'))))))
      : h('p', { class: 'muted' }, 'No checks reported.'));
}

async function viewStatus(m, current) {
  const draw = (s) => {
    // Someone is typing an auth key: redraw later.
    if (tailnetJoin && document.activeElement === $('#tailnet-auth-key', tailnetJoin)) return;
    const b = s.box || {};
    const keep = window.scrollY;
    fill(m, pageHead('Status', h('span', { class: 'muted small live' }, 'live · every 3 s')),
      healthCard((s.health || []).slice().sort((a, c) => a.ok - c.ok)),
      peersCard(s.peers || []), s.tailnet ? tailnetCard(s.tailnet) : null, devicesCard(s.devices || []),
      s.wifi ? wifiCard(s.wifi) : null, boxCard(b));
    window.scrollTo(0, keep);
  };
  const poll = async () => {
    try {
      const s = await api('GET', '/api/status');
      if (!current()) return;
      noteStatus(s);
      recordTraffic(s.peers);
      setBanner('');
      draw(s);
    } catch (err) {
      if (current() && err.status !== 401) setBanner(err.message + ' Retrying…', 'bad');
    }
  };
  await poll();
  if (!current()) return;
  if (!state.status) throw new ApiError(0, { error: 'Could not load the status.' });
  every(POLL_MS, () => { if (document.visibilityState === 'visible') poll(); });
}

// ---------------------------------------------------------------- devices --

const DEVICE_TAILNET = [
  ['node', 'Own node'],
  ['behind', 'Behind the box'],
  ['off', 'Not in the tailnet'],
];

// A device's place in the tailnet: its node (name, address, online) and the
// switch own node / behind the box / not in the tailnet, and its node's tags.
function deviceTailnet(d, id, box, nodes) {
  const node = nodes.find((n) => n.mac === d.mac);
  const mode = h('select', { id: `device-tailnet-${id}`, name: 'tailnet' },
    ...DEVICE_TAILNET.map(([v, text]) => h('option', { value: v, selected: v === d.tailnet }, text)));
  mode.addEventListener('change', () => {
    const want = mode.value;
    const before = d.tailnet;
    busy(box, async () => {
      mode.disabled = true;
      try {
        await api('PUT', `/api/devices/${encodeURIComponent(d.mac)}`, { tailnet: want });
        d.tailnet = want;
        $('.form-ok', box).textContent = want === 'node'
          ? 'Saved: the device becomes a tailnet node at its next address renewal.'
          : 'Saved: its own node (if any) is logged out of the tailnet; the device moves at its next address renewal.';
      } catch (err) { mode.value = before; throw err; } finally { mode.disabled = false; }
    });
  });
  const tags = h('input', { id: `device-tags-${id}`, name: 'tags', value: (d.tags || []).join(', '), placeholder: 'tag:device', maxlength: '512' });
  const tagForm = h('form', { novalidate: true },
    fieldRow('tags', 'Tags of its node', tags, h('button', { class: 'btn', type: 'submit', id: `device-tags-save-${id}` }, 'Save'),
      'Comma-separated, e.g. tag:printer. Empty: the box\'s device tags. Asked for when its node registers.'));
  tagForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const list = tags.value.split(',').map((t) => t.trim()).filter(Boolean);
    busy(box, async () => {
      await api('PUT', `/api/devices/${encodeURIComponent(d.mac)}`, { tags: list });
      $('.form-ok', box).textContent = 'Tags saved.';
    });
  });
  const state = node ? (node.state === 'logged-in' ? 'online' : (TAILNET_STATES[node.state] || node.state)) : 'no node';
  return h('div', { class: 'device-tailnet', id: `device-tailnet-info-${id}` },
    h('dl', { class: 'kv' },
      h('dt', {}, 'Tailnet name'), h('dd', { class: 'tailnet-name' }, (node && node.name) || '–'),
      h('dt', {}, 'Tailnet address'), h('dd', { class: 'tailnet-address' }, (node && node.address) || '–'),
      h('dt', {}, 'Tailnet state'), h('dd', { class: 'tailnet-state' }, state)),
    field('tailnet', 'In the tailnet', mode, 'Own node: a tailnet member with its own address, name and tags. '
      + 'Behind the box: reached through the box\'s subnet route. Not in the tailnet: this network and the internet only.'),
    d.tailnet === 'node' ? tagForm : null);
}

async function viewDevices(m, current) {
  const s = await api('GET', '/api/status');
  if (!current()) return;
  noteStatus(s);
  const devices = s.devices || [];
  const cards = devices.map((d) => {
    const id = macId(d.mac);
    const nameIn = h('input', { id: `device-name-${id}`, name: 'name', value: d.name || '', placeholder: d.hostname || 'Name', maxlength: '64' });
    const pin = h('input', { type: 'checkbox', id: `device-pin-${id}`, name: 'pin', checked: !!d.pinned });
    const box = h('article', { class: 'card device', dataset: { mac: d.mac } });
    const rename = h('form', { novalidate: true },
      fieldRow('name', 'Name', nameIn, h('button', { class: 'btn', type: 'submit', id: `device-rename-${id}` }, 'Rename'),
        d.hostname ? `DHCP hostname: ${d.hostname}. Leave empty to use it.` : 'The device sent no hostname.'));
    rename.addEventListener('submit', (ev) => {
      ev.preventDefault();
      busy(box, async () => {
        await api('PUT', `/api/devices/${encodeURIComponent(d.mac)}`, { name: nameIn.value.trim() });
        d.name = nameIn.value.trim() || null;
        $('h2', box).replaceChildren(...[deviceName(d)].flat());
        $('.form-ok', box).textContent = 'Saved.';
      });
    });
    pin.addEventListener('change', () => {
      const want = pin.checked;
      busy(box, async () => {
        pin.disabled = true;
        try {
          await api('PUT', `/api/devices/${encodeURIComponent(d.mac)}`, { pin: want });
          $('.form-ok', box).textContent = want ? `Address ${d.ip} is now reserved for this device.` : 'Reservation removed.';
        } catch (err) { pin.checked = !want; throw err; } finally { pin.disabled = false; }
      });
    });
    const tailnetPart = d.tailnet ? deviceTailnet(d, id, box, (s.tailnet && s.tailnet.devices) || []) : null;
    const forget = h('button', { class: 'btn danger', type: 'button', id: `device-forget-${id}` }, 'Forget');
    forget.addEventListener('click', () => {
      if (!confirm(`Forget ${d.name || d.hostname || d.mac}? Its lease, reservation and name are removed.`)) return;
      busy(box, async () => {
        await api('DELETE', `/api/devices/${encodeURIComponent(d.mac)}`);
        box.remove();
        if (!$('.device', m)) render();
      });
    });
    add(box, [
      h('div', { class: 'card-head' }, h('h2', {}, deviceName(d)), dot(d.active !== false, d.active === false ? 'inactive' : 'active')),
      h('dl', { class: 'kv' }, h('dt', {}, 'MAC'), h('dd', {}, h('code', {}, d.mac)), h('dt', {}, 'Mesh address'), h('dd', {}, d.ip || '–'),
        h('dt', {}, 'Lease'), h('dd', {}, inSpan(d.expires_in_s)), h('dt', {}, 'Last seen'), h('dd', {}, ago(d.last_seen_s))),
      rename,
      checkField('pin', 'Pin this address (DHCP reservation)', pin, 'The device always gets the same mesh address.'),
      tailnetPart,
      h('div', { class: 'actions' }, forget),
      formError(), formOk()]);
    return box;
  });
  fill(m, pageHead('Devices'),
    h('p', { class: 'muted intro' }, 'Devices plugged into the box\'s bridge port get a mesh address by DHCP. Every peer of the mesh can reach them.'),
    cards.length ? h('div', { class: 'grid' }, cards) : h('div', { class: 'card' }, h('p', { class: 'muted empty' }, 'No bridged devices yet.')));
}

// ------------------------------------------------------------------ peers --

function fixSvg(container) {
  const svg = $('svg', container);
  if (!svg) return;
  if (!svg.getAttribute('viewBox')) {
    const w = parseFloat(svg.getAttribute('width')), hh = parseFloat(svg.getAttribute('height'));
    if (w && hh) svg.setAttribute('viewBox', `0 0 ${w} ${hh}`);
  }
  svg.removeAttribute('width');
  svg.removeAttribute('height');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'QR code of the peer configuration');
}

async function viewPeers(m, current) {
  const [s, settings] = await Promise.all([api('GET', '/api/status'), api('GET', '/api/settings').catch(() => null)]);
  if (!current()) return;
  noteStatus(s);
  const box = s.box || {};
  const list = h('section', { class: 'card', id: 'peer-list' });
  drawPeerList(list, s.peers || []);

  const exitNode = settings && settings['routing.exit_node'];
  const name = h('input', { id: 'peer-name', name: 'name', required: true, maxlength: '32', pattern: '[A-Za-z0-9._-]{1,32}', placeholder: 'phone', autocomplete: 'off', spellcheck: 'false' });
  const endpoint = h('input', { id: 'peer-endpoint', name: 'endpoint', value: box.endpoint || '', placeholder: 'box.example.net:51820', autocomplete: 'off', spellcheck: 'false' });
  const routeAll = h('input', { type: 'checkbox', id: 'peer-route-all', name: 'route_all', disabled: exitNode === false });
  const result = h('section', { class: 'card result', id: 'peer-result', hidden: true });
  const form = h('form', { id: 'peer-add-form', class: 'card', novalidate: true },
    h('h2', {}, 'Add device to mesh'),
    h('p', { class: 'muted' }, 'Creates a key pair and a WireGuard config for a phone or laptop. Scan the QR code with the WireGuard app, or download the .conf file.'),
    field('name', 'Name', name, 'Letters, digits, dot, dash, underscore; up to 32.'),
    field('endpoint', 'Box address as the device sees it', endpoint, 'host:port the device connects to, e.g. your public address or DNS name and the WireGuard port.'),
    checkField('route_all', 'Send all internet traffic through this box', routeAll,
      exitNode === false ? h('span', {}, 'Turn on “exit node” in ', h('a', { href: '/settings', 'data-link': true }, 'Settings'), ' first.') : 'The device uses this box as its exit node.'),
    formError(),
    h('button', { class: 'btn primary', type: 'submit', id: 'peer-add' }, 'Add peer'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      const n = name.value.trim();
      if (!/^[A-Za-z0-9._-]{1,32}$/.test(n)) throw localError('Use 1–32 letters, digits, dots, dashes or underscores.', 'name');
      let r;
      try {
        r = await api('POST', '/api/peers', { name: n, route_all: routeAll.checked, endpoint: endpoint.value.trim() || null });
      } catch (err) {
        if (err.status === 409) err.field = 'name';
        throw err;
      }
      showPeerResult(result, r);
      name.value = '';
      // Refresh the list without losing the result panel.
      try {
        const s2 = await api('GET', '/api/status');
        if (current()) { noteStatus(s2); drawPeerList(list, s2.peers || [], n); }
      } catch (_) { /* the list refreshes on the next visit */ }
    });
  });
  fill(m, pageHead('Peers'), form, result, list);
}

function drawPeerList(list, peers, added) {
  fill(list, h('h2', {}, 'Peers'), peers.length ? peers.map((p) => peerRow(p, p.name === added)) : h('p', { class: 'muted empty' }, 'No peers yet.'));
}

function peerRow(p, isNew) {
  const row = h('div', { class: 'peer-row' + (isNew ? ' new' : '') + (p.enabled === false ? ' disabled' : ''), dataset: { peer: p.name } });
  const toggle = h('input', { type: 'checkbox', id: `peer-enabled-${p.name}`, checked: p.enabled !== false, role: 'switch' });
  toggle.addEventListener('change', () => {
    const want = toggle.checked;
    busy(row, async () => {
      toggle.disabled = true;
      try {
        await api('PUT', `/api/peers/${encodeURIComponent(p.name)}`, { enabled: want });
        row.classList.toggle('disabled', !want);
      } catch (err) { toggle.checked = !want; throw err; } finally { toggle.disabled = false; }
    });
  });
  const remove = h('button', { class: 'btn danger small', type: 'button', id: `peer-remove-${p.name}` }, 'Remove');
  remove.addEventListener('click', () => {
    if (!confirm(`Remove peer ${p.name}? It can no longer connect to the mesh.`)) return;
    busy(row, async () => {
      await api('DELETE', `/api/peers/${encodeURIComponent(p.name)}`);
      row.remove();
    });
  });
  return add(row, [
    h('div', { class: 'peer-main' }, dot(p.online && p.enabled !== false, ''), h('strong', {}, p.name),
      h('span', { class: 'muted small' }, (p.allowed_ips || []).join(', ')),
      h('span', { class: 'muted small' }, isNew ? 'just added' : `handshake ${ago(p.last_handshake_s)}`)),
    h('div', { class: 'peer-actions' }, h('label', { class: 'switch' }, toggle, h('span', {}, 'Enabled')), remove),
    formError()]);
}

function showPeerResult(result, r) {
  if (state.confUrl) URL.revokeObjectURL(state.confUrl);
  const filename = r.filename || `${(r.peer && r.peer.name) || 'peer'}.conf`;
  state.confUrl = URL.createObjectURL(new Blob([r.config || ''], { type: 'text/plain' }));
  const qr = h('div', { id: 'peer-qr', class: 'qr' });
  if (r.qr_svg) { qr.innerHTML = String(r.qr_svg).replace(/^\s*<\?xml[^>]*\?>\s*/, ''); fixSvg(qr); } else qr.append(h('p', { class: 'muted' }, 'No QR code in the answer.'));
  const pre = h('pre', { id: 'peer-conf', class: 'conf' }, r.config || '');
  result.replaceChildren(
    h('h2', {}, `Peer ${(r.peer && r.peer.name) || ''} added`),
    h('p', { class: 'warn', role: 'alert' }, h('strong', {}, 'Save it now: '),
      'this is the only time the private key is shown. The box does not keep it. If you lose it, remove the peer and add it again.'),
    h('div', { class: 'result-grid' },
      h('div', {}, h('h3', {}, 'Scan with the WireGuard app'), qr),
      h('div', {}, h('h3', {}, 'Config file'), pre,
        h('div', { class: 'actions' },
          h('a', { id: 'peer-download', class: 'btn primary', href: state.confUrl, download: filename }, `Download ${filename}`),
          copyButton(() => r.config || '', 'Copy config')))));
  result.hidden = false;
  result.scrollIntoView({ behavior: 'smooth', block: 'start' });
}

// --------------------------------------------------------------- settings --

const SETTINGS = [
  { group: 'Bridge and DHCP' },
  { key: 'bridge.ports', label: 'Bridge ports', kind: 'ports', hint: 'The interfaces whose devices join the mesh (the box\'s LAN ports). Never the uplink.' },
  { key: 'dhcp.range', label: 'DHCP range', kind: 'text', id: 'dhcp-range', hint: 'Mesh addresses handed to bridged devices, e.g. 10.77.1.100-10.77.1.200.' },
  { key: 'dhcp.lease_time', label: 'Lease time', kind: 'text', id: 'dhcp-lease-time', hint: 'e.g. 30m, 12h, 1d.' },
  { group: 'Mesh (WireGuard)' },
  { key: 'mesh.listen_port', label: 'Listen port (UDP)', kind: 'port', id: 'mesh-listen-port' },
  { key: 'mesh.endpoint', label: 'Public endpoint', kind: 'text', id: 'mesh-endpoint', hint: 'host:port peers use to reach this box; put into new peer configs. Empty: ask each time.' },
  { group: 'Web page' },
  { key: 'web.listen', label: 'Listen addresses', kind: 'list', id: 'web-listen', hint: 'One address:port per line. Keep them on the bridge or mesh side, never the uplink.' },
  { group: 'Discovery' },
  { key: 'discovery.services', label: 'Services shown to the mesh', kind: 'list', id: 'discovery-services', hint: 'One service type per line, e.g. _ipp._tcp.' },
  { key: 'discovery.opt_out', label: 'Devices never shown', kind: 'list', id: 'discovery-opt-out', hint: 'One MAC address or DHCP hostname per line.' },
  { group: 'Routing' },
  { key: 'routing.advertise_routes', label: 'Home networks shared with the mesh', kind: 'list', id: 'routing-advertise-routes', hint: 'One prefix per line, e.g. 192.168.1.0/24.' },
  { key: 'routing.exit_node', label: 'Exit node: peers may send their internet traffic through this box', kind: 'bool', id: 'routing-exit-node' },
  { group: 'Wi-Fi access point' },
  { key: 'wifi.enabled', label: 'Run a Wi-Fi access point in the bridge', kind: 'bool', id: 'wifi-enabled', hint: 'Wi-Fi devices (a Chromecast) join the bridge and get their address from this box.' },
  { key: 'wifi.interface', label: 'Wi-Fi interface', kind: 'text', id: 'wifi-interface', hint: 'e.g. wlan0. On a Pi whose Wi-Fi is the uplink, a new name such as uap0 (created on the same radio). On OpenWrt, the radio (radio0).' },
  { key: 'wifi.ssid', label: 'Network name (SSID)', kind: 'text', id: 'wifi-ssid', hint: '1 to 32 bytes.' },
  { key: 'wifi.passphrase', label: 'Passphrase', kind: 'secret', id: 'wifi-passphrase', hint: '8 to 63 characters. Never shown; leave empty to keep the current one.' },
  { key: 'wifi.security', label: 'Security', kind: 'choice', id: 'wifi-security', options: [['wpa2-wpa3', 'WPA2 and WPA3'], ['wpa2', 'WPA2 only'], ['wpa3', 'WPA3 only']] },
  { key: 'wifi.country', label: 'Country', kind: 'text', id: 'wifi-country', hint: 'Two letters, e.g. DE or US: the channels and power allowed where the box is.' },
  { key: 'wifi.channel', label: 'Channel', kind: 'channel', id: 'wifi-channel', hint: '1 to 13 (2.4 GHz) or 36 to 177 (5 GHz). When the Wi-Fi is also the uplink, the uplink\'s channel is used.' },
];

async function viewSettings(m, current) {
  const cfg = await api('GET', '/api/settings');
  if (!current()) return;
  let base = { ...cfg };
  const form = h('form', { id: 'settings-form', novalidate: true });
  const getters = {};
  let fieldset = null;
  for (const s of SETTINGS) {
    if (s.group) {
      fieldset = h('fieldset', { class: 'card' }, h('legend', {}, s.group));
      form.append(fieldset);
      continue;
    }
    if (!(s.key in cfg) && !(s.kind === 'secret' && `${s.key}_set` in cfg)) continue; // this firmware build has no such setting
    const v = cfg[s.key];
    let el;
    if (s.kind === 'secret') {
      // Write-only: never filled in; empty keeps the one saved.
      const i = h('input', { id: s.id, name: s.key, type: 'password', autocomplete: 'new-password', value: '',
        placeholder: cfg[`${s.key}_set`] ? '(unchanged)' : '' });
      el = field(s.key, s.label, i, s.hint);
      getters[s.key] = () => i.value || undefined;
    } else if (s.kind === 'choice') {
      const sel = h('select', { id: s.id, name: s.key }, ...s.options.map(([val, text]) => h('option', { value: val, selected: val === v }, text)));
      el = field(s.key, s.label, sel, s.hint);
      getters[s.key] = () => sel.value;
    } else if (s.kind === 'channel') {
      const i = h('input', { id: s.id, name: s.key, type: 'number', min: '1', max: '177', inputmode: 'numeric', value: v === null || v === undefined ? '' : String(v) });
      el = field(s.key, s.label, i, s.hint);
      getters[s.key] = () => {
        const n = Number(i.value);
        if (!Number.isInteger(n) || n < 1) throw localError('A channel is a whole number, e.g. 6 or 36.', s.key);
        return n;
      };
    } else if (s.kind === 'ports') {
      const ifaces = Array.from(new Set([...(cfg.interfaces || []), ...(v || [])]));
      const boxes = ifaces.map((i) => h('label', { class: 'checkline' },
        h('input', { type: 'checkbox', id: `port-${i}`, name: 'bridge.ports', value: i, checked: (v || []).includes(i) }), h('span', {}, i)));
      el = h('div', { class: 'field', dataset: { field: s.key }, role: 'group', 'aria-labelledby': 'ports-label' },
        h('span', { class: 'label', id: 'ports-label' }, s.label),
        boxes.length ? h('div', { class: 'ports' }, boxes) : h('p', { class: 'muted' }, 'No interfaces reported.'),
        h('p', { class: 'hint' }, s.hint), h('p', { class: 'field-error', role: 'alert' }));
      getters[s.key] = () => $$('input[name="bridge.ports"]', form).filter((c) => c.checked).map((c) => c.value);
    } else if (s.kind === 'bool') {
      const c = h('input', { type: 'checkbox', id: s.id, name: s.key, checked: !!v });
      el = checkField(s.key, s.label, c, s.hint);
      getters[s.key] = () => c.checked;
    } else if (s.kind === 'list') {
      const t = h('textarea', { id: s.id, name: s.key, rows: String(Math.max(2, Math.min(8, (v || []).length + 1))), spellcheck: 'false' }, (v || []).join('\n'));
      el = field(s.key, s.label, t, s.hint);
      getters[s.key] = () => lines(t.value);
    } else if (s.kind === 'port') {
      const i = h('input', { id: s.id, name: s.key, type: 'number', min: '1', max: '65535', inputmode: 'numeric', value: v === null || v === undefined ? '' : String(v) });
      el = field(s.key, s.label, i, s.hint);
      getters[s.key] = () => {
        const n = Number(i.value);
        if (!Number.isInteger(n) || n < 1 || n > 65535) throw localError('A port is a whole number from 1 to 65535.', s.key);
        return n;
      };
    } else {
      const i = h('input', { id: s.id, name: s.key, value: v === null || v === undefined ? '' : String(v), spellcheck: 'false', autocomplete: 'off' });
      el = field(s.key, s.label, i, s.hint);
      getters[s.key] = () => i.value.trim();
    }
    fieldset.append(el);
  }
  for (const fs of $$('fieldset', form)) if (fs.children.length === 1) fs.remove();
  const save = h('button', { class: 'btn primary', type: 'submit', id: 'settings-save' }, 'Save');
  const status = h('div', { class: 'save-result', id: 'settings-result' });
  form.append(h('div', { class: 'card sticky-actions' }, formError(), formOk(), status, h('div', { class: 'actions' }, save)));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      status.replaceChildren();
      const changed = {};
      for (const [k, get] of Object.entries(getters)) {
        const v = get();
        if (v !== undefined && !sameJson(v, base[k])) changed[k] = v;
      }
      if (!Object.keys(changed).length) { $('.form-ok', form).textContent = 'Nothing changed.'; return; }
      const r = await api('PUT', '/api/settings', changed);
      base = { ...base, ...changed };
      for (const i of $$('input[type="password"]', form)) { i.value = ''; i.placeholder = '(unchanged)'; }
      $('.form-ok', form).textContent = r.message || 'Saved.';
      if (r.applied === 'restart') status.replaceChildren(restartBox('The change is saved and takes effect after a restart of the meshbridge service.'));
    });
  });
  fill(m, pageHead('Settings'), h('p', { class: 'muted intro' }, 'Changes are checked before they are saved; a change is applied completely or not at all.'), form);
}

function restartBox(text) {
  const b = h('button', { class: 'btn primary', type: 'button', id: 'restart-now' }, 'Restart now');
  const wrap = h('div', { class: 'restart' }, h('p', {}, text), b, formError());
  b.addEventListener('click', () => busy(wrap, async () => {
    let gone = false;
    try {
      await api('POST', '/api/restart', {}, { quiet401: true });
    } catch (err) {
      // No answer, or our session is gone: it is restarting or has already restarted.
      if (err.status !== 0 && err.status !== 401) throw err;
      gone = true;
    }
    b.textContent = 'Restarting…';
    await afterRestart(gone);
  }));
  return wrap;
}

async function afterRestart(gone) {
  setBanner('The box is restarting. This page reloads when it answers again.', 'info');
  await waitForRestart(gone);
  state.session = null; // sessions may not survive a restart
  await render();
  setBanner('The box has restarted.', 'good');
}

// Answers at all, and with our session still valid?
async function probeBox() {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), 2000);
  try {
    const r = await fetch('/api/session', { cache: 'no-store', signal: ctl.signal });
    const s = r.ok ? await r.json() : null;
    return { up: r.ok, authed: !!(s && s.authenticated) };
  } catch (_) { return { up: false, authed: false }; } finally { clearTimeout(t); }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Does the box restart within `ms`? Seen as a moment without answer, or as our
// session ending (a quick restart can fall between two probes).
async function goesAway(ms) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const p = await probeBox();
    if (!p.up || !p.authed) return true;
    await sleep(300);
  }
  return false;
}

async function waitForRestart(gone) {
  // First wait for it to go away (at most 10 s), then for it to come back (at most 90 s).
  if (!gone) await goesAway(10000);
  const t0 = Date.now();
  while (Date.now() - t0 < 90000) {
    if ((await probeBox()).up) return;
    await sleep(1000);
  }
  throw new ApiError(0, { error: 'The box did not come back within 90 s. Check its power and network, then reload this page.' });
}

// -------------------------------------------------------------- discovery --

async function viewDiscovery(m, current) {
  const d = await api('GET', '/api/discovery');
  if (!current()) return;
  const services = d.services || [];
  const rows = services.map((s) => h('tr', { class: s.exposed ? '' : 'inactive' },
    td('Instance', h('strong', {}, s.instance)),
    td('Type', h('code', {}, s.type)),
    td('Host', `${s.host || '?'}${s.port ? ':' + s.port : ''}`),
    td('Device', s.site ? `at box ${s.site}` : (s.device || h('span', { class: 'muted' }, '–'))),
    td('Exposed', s.exposed ? h('span', { class: 'tag ok' }, 'yes') : h('span', { class: 'tag' }, 'no')),
    td('How to use', serviceUse(s))));
  const wg = d.wg_line || (d.dns_server ? `DNS = ${d.dns_server}${d.domain ? ', ' + d.domain : ''}` : '');
  fill(m, pageHead('Discovery'),
    d.enabled === false ? h('p', { class: 'warn' }, 'Discovery is turned off: the mesh sees no printers or Chromecasts from this box.') : null,
    h('section', { class: 'card', id: 'wg-dns' }, h('h2', {}, 'Find these devices from the mesh'),
      h('p', {}, 'Put this line into the ', h('code', {}, '[Interface]'), ' section of a peer\'s WireGuard config: the peer then uses this box as its DNS server and finds printers and casts by name.'),
      wg ? h('div', { class: 'copyline' }, h('code', { id: 'wg-line' }, wg), copyButton(() => wg)) : h('p', { class: 'muted' }, 'Not available.'),
      d.domain ? h('p', { class: 'muted small' }, `Domain: ${d.domain}${d.dns_server ? ' · DNS server: ' + d.dns_server : ''}`) : null),
    h('section', { class: 'card', id: 'services' }, h('h2', {}, 'Services seen on the bridge'),
      table('services', ['Instance', 'Type', 'Host', 'Device', 'Exposed', 'How to use'], rows,
        'Nothing announced yet. Devices on the bridge that speak mDNS (printers, Chromecasts) appear here.'),
      h('p', { class: 'muted small' }, 'Only allowed service types from devices that are not opted out are exposed. Change them in ',
        h('a', { href: '/settings', 'data-link': true }, 'Settings'), '.')));
}

// What someone who cannot use mDNS does with a service: a printer's IPP URI
// (Android, Windows, `lpadmin -m everywhere`) and an AirPrint profile; for a
// cast receiver, where casting works from. Names come from the wire: they
// only ever become text nodes or an encoded query parameter.
function serviceUse(s) {
  if (s.uri) {
    const profile = s.type === '_ipp._tcp' || s.type === '_ipps._tcp'
      ? h('a', { class: 'small', href: '/api/discovery/airprint.mobileconfig?service=' + encodeURIComponent(s.instance),
        download: 'printer.mobileconfig' }, 'AirPrint profile (iPhone, Mac)') : null;
    return h('div', { class: 'printer-use' },
      h('div', { class: 'copyline' }, h('code', { class: 'printer-uri' }, s.uri), copyButton(() => s.uri)), profile);
  }
  if (s.type === '_googlecast._tcp') {
    return h('p', { class: 'small cast-note' }, s.site
      ? `Announced here for box ${s.site}: phones and laptops on this box's bridge can cast to it. A phone on cellular, or on the mesh through the WireGuard app, cannot: Cast apps only look on their own network.`
      : 'Phones and laptops on this bridge, or on the bridge of another box that re-announces it, can cast to it. A phone on cellular, or on the mesh through the WireGuard app, cannot: Cast apps only look on their own network.');
  }
  return h('span', { class: 'muted' }, '–');
}

// ----------------------------------------------------------------- system --

async function viewSystem(m, current) {
  const [sys, tokens] = await Promise.all([api('GET', '/api/system'), api('GET', '/api/tokens').catch(() => null)]);
  if (!current()) return;
  const kv = (k, v) => (v === null || v === undefined || v === '') ? null : [h('dt', {}, k), h('dd', {}, v)];
  const info = h('section', { class: 'card', id: 'system-info' }, h('h2', {}, 'This box'),
    h('dl', { class: 'kv' }, kv('Version', sys.version), kv('Board', sys.board), kv('Hostname', sys.hostname),
      kv('Up for', typeof sys.uptime_s === 'number' ? fmtSpan(sys.uptime_s) : null),
      kv('Config file', sys.config_path ? h('code', {}, sys.config_path) : null)));
  fill(m, pageHead('System'), info, logsCard(current), backupCard(), passwordCard(), tokensCard(tokens));
}

function logsCard(current) {
  const filter = h('input', { id: 'log-filter', type: 'search', placeholder: 'Filter, e.g. dhcp or WARN', autocomplete: 'off', spellcheck: 'false' });
  const pre = h('pre', { id: 'logs', class: 'logs', tabindex: '0' });
  const count = h('span', { class: 'muted small' });
  const refresh = h('button', { class: 'btn small', type: 'button', id: 'logs-refresh' }, 'Refresh');
  const card = h('section', { class: 'card', id: 'system-logs' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Log'), refresh),
    h('div', { class: 'field' }, h('label', { for: 'log-filter', class: 'sr' }, 'Filter'), filter), count, pre, formError());
  let all = [];
  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = q ? all.filter((l) => l.toLowerCase().includes(q)) : all;
    pre.textContent = shown.join('\n');
    count.textContent = `${shown.length} of ${all.length} lines (newest at the bottom)`;
    pre.scrollTop = pre.scrollHeight;
  };
  const load = () => busy(card, async () => {
    const r = await api('GET', '/api/logs?lines=500');
    if (!current()) return;
    all = Array.isArray(r.lines) ? r.lines : [];
    draw();
  });
  filter.addEventListener('input', draw);
  refresh.addEventListener('click', load);
  load();
  return card;
}

function backupCard() {
  const dl = h('button', { class: 'btn', type: 'button', id: 'backup-download' }, 'Download backup');
  const file = h('input', { type: 'file', id: 'restore-file', name: 'backup', accept: '.toml,text/plain,application/toml' });
  const restore = h('button', { class: 'btn', type: 'submit', id: 'restore-submit' }, 'Restore backup');
  const status = h('div', { class: 'save-result' });
  const form = h('form', { id: 'restore-form', novalidate: true },
    field('backup', 'Restore from a backup file', file, 'The file is checked first; nothing changes if it is not valid.'),
    h('div', { class: 'actions' }, restore), formError(), formOk(), status);
  const card = h('section', { class: 'card', id: 'system-backup' }, h('h2', {}, 'Backup'),
    h('p', { class: 'muted' }, 'The backup is the box\'s config file, including its private key and peers. Keep it somewhere safe.'),
    h('div', { class: 'actions' }, dl), form);
  dl.addEventListener('click', () => busy(card, async () => {
    const res = await api('GET', '/api/backup', undefined, { raw: true });
    const blob = await res.blob();
    const cd = res.headers.get('content-disposition') || '';
    const m = /filename="?([^";]+)"?/.exec(cd);
    download(m ? m[1] : 'meshbridge-backup.toml', blob);
  }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      status.replaceChildren();
      const f = file.files && file.files[0];
      if (!f) throw localError('Choose a backup file first.', 'backup');
      const text = await f.text();
      if (!confirm('Replace the box\'s configuration with this backup?')) return;
      let r;
      try { r = await api('POST', '/api/restore', text, { type: 'text/plain' }); } catch (err) {
        // Name the config key, but show it here: the restore form has one field.
        if (err.field) err.message = `${err.message} (${err.field})`;
        err.field = undefined;
        const fe = $('[data-field="backup"]', form);
        fe.classList.add('invalid'); $('.field-error', fe).textContent = err.message;
        return;
      }
      $('.form-ok', form).textContent = r.message || 'The backup is valid and saved.';
      if (r.applied === 'restart') {
        if (await goesAway(3000)) await afterRestart(true);
        else status.replaceChildren(restartBox('It takes effect after a restart.'));
      }
    });
  });
  return card;
}

function passwordCard() {
  const cur = h('input', { id: 'pw-current', name: 'current', type: 'password', autocomplete: 'current-password' });
  const pw = h('input', { id: 'pw-new', name: 'password', type: 'password', autocomplete: 'new-password', minlength: '8' });
  const pw2 = h('input', { id: 'pw-repeat', name: 'password_repeat', type: 'password', autocomplete: 'new-password' });
  const form = h('form', { id: 'password-form', class: 'card', novalidate: true }, h('h2', {}, 'Change password'),
    field('current', 'Current password', cur), field('password', 'New password', pw, 'At least 8 characters. Other sessions are logged out.'),
    field('password_repeat', 'Repeat new password', pw2), formError(), formOk(),
    h('button', { class: 'btn primary', type: 'submit', id: 'pw-submit' }, 'Change password'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      if (!cur.value) throw localError('Enter the current password.', 'current');
      if (pw.value.length < 8) throw localError('The new password needs at least 8 characters.', 'password');
      if (pw.value !== pw2.value) throw localError('The two new passwords differ.', 'password_repeat');
      try {
        await api('POST', '/api/password', { current: cur.value, password: pw.value }, { quiet401: true });
      } catch (err) {
        if (err.status === 401) { err.field = 'current'; err.message = (err.body && err.body.error) || 'The current password is wrong.'; }
        throw err;
      }
      cur.value = pw.value = pw2.value = '';
      $('.form-ok', form).textContent = 'Password changed. Other sessions are logged out.';
      const s = await loadSession();
      if (!s.authenticated) navigate('/login', true);
    });
  });
  return form;
}

function tokensCard(tokens) {
  const name = h('input', { id: 'token-name', name: 'name', placeholder: 'e.g. home-assistant', autocomplete: 'off', spellcheck: 'false' });
  const list = h('div', { id: 'token-list' });
  const shown = h('div', { id: 'token-result' });
  const form = h('form', { id: 'token-form', novalidate: true },
    fieldRow('name', 'New token name', name, h('button', { class: 'btn', type: 'submit', id: 'token-create' }, 'Create token')));
  const card = h('section', { class: 'card', id: 'system-tokens' }, h('h2', {}, 'API tokens'),
    h('p', { class: 'muted' }, 'For scripts: send ', h('code', {}, 'Authorization: Bearer <token>'), ' to the box\'s /api/.'),
    list, form, formError(), shown);
  const drawList = (items) => {
    if (!items) { list.replaceChildren(h('p', { class: 'muted' }, 'Could not load the tokens.')); return; }
    if (!items.length) { list.replaceChildren(h('p', { class: 'muted empty' }, 'No tokens.')); return; }
    list.replaceChildren(h('ul', { class: 'tokens' }, items.map((t) => {
      const del = h('button', { class: 'btn danger small', type: 'button', id: `token-delete-${t.name}` }, 'Delete');
      const li = h('li', { dataset: { token: t.name } }, h('span', {}, h('strong', {}, t.name), ' ', h('span', { class: 'muted small' }, t.created ? `created ${t.created}` : '')), del);
      del.addEventListener('click', () => {
        if (!confirm(`Delete token ${t.name}? Scripts using it stop working.`)) return;
        busy(card, async () => { await api('DELETE', `/api/tokens/${encodeURIComponent(t.name)}`); drawList(await api('GET', '/api/tokens')); });
      });
      return li;
    })));
  };
  drawList(Array.isArray(tokens) ? tokens : (tokens && tokens.tokens) || null);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(card, async () => {
      const n = name.value.trim();
      if (!n) throw localError('Give the token a name.', 'name');
      const r = await api('POST', '/api/tokens', { name: n });
      name.value = '';
      shown.replaceChildren(h('div', { class: 'warn' }, h('p', {}, h('strong', {}, `Token ${r.name || n}: `), 'copy it now, it is shown only once.'),
        h('div', { class: 'copyline' }, h('code', { id: 'token-value' }, r.token || ''), copyButton(() => r.token || ''))));
      const t = await api('GET', '/api/tokens');
      drawList(Array.isArray(t) ? t : t.tokens);
    });
  });
  return card;
}

// ------------------------------------------------------------------ start --

render();
