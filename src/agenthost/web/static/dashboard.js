// The fleet dashboard: reads /admin/fleet/stream (SSE through fetch, with the admin token)
// and draws every process, the last minutes as charts, recent turns, rate-limit rejections
// by tenant and the autoscaler's decisions. Reconnects by itself when the stream ends (a
// process draining ends its streams; the load balancer sends the next one elsewhere).
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN = 'agenthost.adminToken';
const WINDOW_S = 300;
const colours = new Map();
let generation = 0;

function colourOf(processId) {
  if (!colours.has(processId)) colours.set(processId, CHART_COLOURS[colours.size % CHART_COLOURS.length]);
  return colours.get(processId);
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

const shortId = (id) => id.length > 28 ? '…' + id.slice(-27) : id;
const clock = (t) => new Date(t * 1000).toLocaleTimeString();
const seconds = (s) => s === null || s === undefined ? '–' : (s < 1 ? (s * 1000).toFixed(0) + ' ms' : s.toFixed(2) + ' s');
const mebibytes = (b) => (b / 1048576).toFixed(0) + ' MiB';

function renderProcesses(fleet) {
  const body = $('processes').tBodies[0];
  body.replaceChildren();
  for (const p of fleet.processes) {
    const row = document.createElement('tr');
    row.dataset.processId = p.process_id;
    row.dataset.state = p.state;
    const name = cell(row, shortId(p.process_id), 'mono');
    name.title = p.process_id;
    if (p.process_id === fleet.served_by) name.textContent += ' (this page)';
    cell(row, p.address, 'mono');
    cell(row, p.version);
    cell(row, p.role);
    cell(row, p.state, 'state-' + p.state);
    cell(row, clock(p.started_at));
    cell(row, String(p.active_connections), 'num');
    cell(row, String(p.inflight_turns), 'num');
    cell(row, p.turns_per_s.toFixed(1), 'num');
    cell(row, seconds(p.p99_s), 'num');
    cell(row, p.cpu_percent.toFixed(0) + ' %', 'num');
    cell(row, mebibytes(p.rss_bytes), 'num');
    cell(row, Math.max(0, fleet.now - p.heartbeat_at).toFixed(0) + ' s ago', 'num');
    body.append(row);
  }
}

function renderCharts(fleet) {
  const series = (pick) => fleet.processes.map((p) => ({
    name: shortId(p.process_id), colour: colourOf(p.process_id),
    points: p.history.map((sample) => [sample[0], pick(sample)]),
  }));
  const options = {now: fleet.now, windowS: WINDOW_S};
  drawChart($('chart-turns'), $('chart-turns-legend'), series((s) => s[1]), options);
  drawChart($('chart-inflight'), $('chart-inflight-legend'), series((s) => s[2]), options);
  drawChart($('chart-p99'), $('chart-p99-legend'), series((s) => s[3]), options);
}

function renderTurns(fleet) {
  const turns = [];
  for (const p of fleet.processes) {
    for (const t of p.recent_turns) turns.push(Object.assign({process: p.process_id}, t));
  }
  turns.sort((a, b) => b.at - a.at);
  const body = $('recent-turns').tBodies[0];
  body.replaceChildren();
  for (const t of turns.slice(0, 25)) {
    const row = document.createElement('tr');
    cell(row, clock(t.at));
    cell(row, shortId(t.process), 'mono');
    cell(row, t.status);
    cell(row, seconds(t.seconds), 'num');
    cell(row, t.tenant || '–');
    cell(row, t.session_id || '–', 'mono');
    if (fleet.log_content) {
      cell(row, t.message || '', 'content');
      cell(row, t.response || '', 'content');
    }
    body.append(row);
  }
  for (const th of $('recent-turns').querySelectorAll('th.content')) th.hidden = !fleet.log_content;
  $('content-note').textContent = fleet.log_content
    ? 'Messages and answers are shown: the server runs with --log-content.'
    : 'No message content: start the servers with --log-content to see it.';
}

function renderRejections(fleet) {
  const totals = new Map();
  for (const p of fleet.processes) {
    for (const [tenant, count] of Object.entries(p.rate_limited)) {
      totals.set(tenant, (totals.get(tenant) || 0) + count);
    }
  }
  const body = $('rejections').tBodies[0];
  body.replaceChildren();
  for (const [tenant, count] of [...totals].sort((a, b) => b[1] - a[1])) {
    const row = document.createElement('tr');
    cell(row, tenant);
    cell(row, String(count), 'num');
    body.append(row);
  }
}

function renderDecisions(fleet) {
  const body = $('decisions').tBodies[0];
  body.replaceChildren();
  for (const d of fleet.decisions) {
    const row = document.createElement('tr');
    cell(row, clock(d.at));
    cell(row, d.reason);
    cell(row, d.current + ' → ' + d.desired, 'num');
    cell(row, JSON.stringify(d.inputs), 'mono');
    body.append(row);
  }
}

function render(fleet) {
  renderProcesses(fleet);
  renderCharts(fleet);
  renderTurns(fleet);
  renderRejections(fleet);
  renderDecisions(fleet);
  if (fleet.grafana_url) $('grafana-link').href = fleet.grafana_url;
  const live = fleet.processes.filter((p) => p.state !== 'stopped').length;
  $('status').textContent = 'Live: ' + live + (live === 1 ? ' process' : ' processes') +
    '; updated ' + clock(fleet.now) + '.';
}

async function follow(token, mine) {
  let failures = 0;
  while (mine === generation) {
    try {
      const response = await fetch('/admin/fleet/stream', {
        headers: {'Authorization': 'Bearer ' + token, 'Accept': 'text/event-stream'}});
      if (response.status === 401) {
        $('error').textContent = (await describeError(response)).text;
        $('error').hidden = false;
        $('status').textContent = 'Not connected.';
        return;
      }
      if (!response.ok) throw new Error((await describeError(response)).text);
      $('error').hidden = true;
      failures = 0;
      await readEvents(response, (event) => {
        if (mine === generation && event.event === 'fleet') render(JSON.parse(event.data));
      });
    } catch (err) {
      failures += 1;
      $('status').textContent = 'Reconnecting (' + err.message + ')…';
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(500 * failures, 3000)));
  }
}

function connect(event) {
  if (event) event.preventDefault();
  const token = $('admin-token').value.trim();
  sessionStorage.setItem(TOKEN, token);
  generation += 1;
  $('status').textContent = 'Connecting…';
  follow(token, generation);
}

document.addEventListener('DOMContentLoaded', () => {
  $('connect-form').addEventListener('submit', connect);
  const saved = sessionStorage.getItem(TOKEN);
  if (saved) {
    $('admin-token').value = saved;
    connect();
  }
});
