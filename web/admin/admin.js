// The davpush admin view: reads /admin/events (text/event-stream) with a streaming fetch, so
// that the admin token travels in an Authorization header, never in a URL, and renders each
// snapshot with textContent only (nothing the server sends is parsed as HTML).

const $ = (id) => document.getElementById(id);
const KEY = 'davpush-admin-token';
const history = { notify: [], sent: [] };
let running = false;
let firstOfStream = true;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(tbody, cells) {
  const tr = document.createElement('tr');
  for (const c of cells) tr.appendChild(c);
  tbody.appendChild(tr);
}

function fmt(n) {
  if (n >= 100) return Math.round(n).toLocaleString('en');
  return (Math.round(n * 10) / 10).toLocaleString('en');
}

function ago(secs) {
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  return `${Math.floor(secs / 3600)} h ago`;
}

function spark(id, series, value) {
  series.push(value);
  if (series.length > 60) series.shift();
  const max = Math.max(1, ...series);
  const step = 120 / 59;
  const pts = series.map((v, i) => `${(i + 60 - series.length) * step},${30 - (v / max) * 28 - 1}`);
  $(id).querySelector('polyline').setAttribute('points', pts.join(' '));
}

function render(s) {
  $('node').textContent = s.node ? `node ${s.node}` : 'single node';
  $('connections').textContent = s.connections.toLocaleString('en');
  $('notify-rate').textContent = fmt(s.notifications_per_sec);
  let sent = 0;
  for (const byOutcome of Object.values(s.deliveries_per_sec)) sent += byOutcome.sent || 0;
  $('sent-rate').textContent = fmt(sent);
  // The first snapshot of a stream has no rates yet (nothing to compare with).
  if (!firstOfStream) {
    spark('notify-spark', history.notify, s.notifications_per_sec);
    spark('sent-spark', history.sent, sent);
  }
  firstOfStream = false;
  $('retries').textContent = Object.values(s.pending_retries).reduce((a, b) => a + b, 0).toLocaleString('en');
  $('uptime').textContent = `Up ${ago(s.uptime_secs).replace(' ago', '')}${s.ready ? '' : ', loading subscriptions'}.`;

  const services = $('services').tBodies[0];
  services.replaceChildren();
  for (const [name, count] of Object.entries(s.subscriptions)) {
    const rates = el('td');
    const perSec = s.deliveries_per_sec[name] || {};
    const totals = s.deliveries_total[name] || {};
    for (const [outcome, total] of Object.entries(totals)) {
      const b = el('span', `${outcome} ${fmt(perSec[outcome] || 0)}/s`, `badge ${outcome}`);
      b.title = `${total.toLocaleString('en')} in total`;
      rates.appendChild(b);
    }
    if (!rates.childNodes.length) rates.appendChild(el('span', 'no deliveries yet', 'dim'));
    const retries = name in s.pending_retries ? s.pending_retries[name].toLocaleString('en') : '–';
    row(services, [el('td', name, 'mono'), el('td', count.toLocaleString('en'), 'num'), el('td', retries, 'num'), rates]);
  }

  const busiest = $('busiest').tBodies[0];
  busiest.replaceChildren();
  for (const t of s.busiest) {
    row(busiest, [el('td', t.topic, 'mono'), el('td', t.notifications.toLocaleString('en'), 'num'),
      el('td', t.subscribers.toLocaleString('en'), 'num')]);
  }
  if (!s.busiest.length) row(busiest, [el('td', 'no notifications yet', 'dim')]);

  const nodes = $('nodes').tBodies[0];
  nodes.replaceChildren();
  if (s.nodes === null) {
    row(nodes, [el('td', s.node ? `${s.node} (this node)` : 'this node', 'mono'), el('td', 'single node', 'live'),
      el('td', '–', 'num'), el('td', '–', 'num')]);
  } else {
    for (const n of s.nodes) {
      row(nodes, [el('td', n.this ? `${n.node} (this node)` : n.node, 'mono'), el('td', n.live ? 'live' : 'gone', n.live ? 'live' : 'gone'),
        el('td', ago(n.seen_secs_ago), 'num'), el('td', n.websocket_topics.toLocaleString('en'), 'num')]);
    }
  }

  const errors = $('errors').tBodies[0];
  errors.replaceChildren();
  const all = [];
  for (const [service, list] of Object.entries(s.errors)) for (const e of list) all.push([service, e]);
  all.sort((a, b) => b[1].at - a[1].at);
  for (const [service, e] of all) {
    row(errors, [el('td', new Date(e.at * 1000).toLocaleTimeString('en-GB')), el('td', service, 'mono'),
      el('td', e.outcome, `outcome-${e.outcome}`), el('td', e.host, 'mono'), el('td', e.reason)]);
  }
  if (!all.length) row(errors, [el('td', 'no errors', 'dim')]);
}

function setState(text, cls) {
  $('state').textContent = text;
  $('state').className = `state ${cls}`;
}

async function stream(token) {
  const resp = await fetch('events', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (resp.status === 401) {
    sessionStorage.removeItem(KEY);
    $('login-error').textContent = 'This admin token is not accepted.';
    $('login').hidden = false;
    $('view').hidden = true;
    setState('not connected', 'off');
    return false;
  }
  if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
  sessionStorage.setItem(KEY, token);
  $('login').hidden = true;
  $('view').hidden = false;
  setState('live', 'on');
  firstOfStream = true;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data) render(JSON.parse(data));
    }
  }
  return true;
}

async function run(token) {
  if (running) return;
  running = true;
  $('login-error').textContent = '';
  for (;;) {
    let again;
    try {
      again = await stream(token);
    } catch (e) {
      again = true;
    }
    if (!again) break;
    setState('reconnecting', 'lost');
    await new Promise((r) => setTimeout(r, 2000));
  }
  running = false;
}

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  run($('token').value.trim());
});

const saved = sessionStorage.getItem(KEY);
if (saved) run(saved);
