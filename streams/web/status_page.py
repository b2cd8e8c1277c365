"""The HTML of ``/status``: one self-contained page (inline CSS and plain JavaScript, no
external assets) that fetches ``status.json`` every ``refresh_seconds`` and fills itself in.
Values are written with ``textContent`` only, never parsed as HTML. Under
``nexttrack worker --processes N`` a "Workers on this machine" table lists every worker of the
group (``status.json``'s ``group``), each port linking to that worker's own page."""

from __future__ import annotations

STATUS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>NextTrack worker status</title>
<style>
  :root { --bg:#0f1419; --card:#1a2129; --fg:#e6e9ec; --dim:#8b96a3; --ok:#3fb950;
          --bad:#f85149; --accent:#58a6ff; }
  * { box-sizing: border-box; }
  body { margin:0; padding:20px 28px; background:var(--bg); color:var(--fg);
         font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { display:flex; align-items:baseline; gap:16px; flex-wrap:wrap; margin-bottom:16px; }
  h1 { font-size:20px; margin:0; }
  h2 { font-size:15px; margin:22px 0 8px; color:var(--dim); font-weight:600;
       text-transform:uppercase; letter-spacing:.04em; }
  .pill { padding:2px 10px; border-radius:10px; background:var(--card); color:var(--dim); }
  .pill.live { color:var(--ok); } .pill.error { color:var(--bad); }
  .grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(170px, 1fr)); gap:10px; }
  .tile { background:var(--card); border-radius:8px; padding:10px 14px; }
  .tile .label { color:var(--dim); font-size:12px; }
  .tile .value { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums;
                 overflow-wrap:anywhere; }
  .tile .sub { color:var(--dim); font-size:12px; }
  table { border-collapse:collapse; width:100%; background:var(--card); border-radius:8px;
          overflow:hidden; font-variant-numeric:tabular-nums; }
  th, td { text-align:left; padding:6px 12px; border-bottom:1px solid #2a323c; }
  th { color:var(--dim); font-weight:600; font-size:12px; }
  td.num, th.num { text-align:right; }
  .empty { color:var(--dim); font-style:italic; }
  tr.self td { color:var(--accent); }
  a { color:var(--accent); }
  details summary { cursor:pointer; color:var(--accent); margin-top:22px; }
  code { font-size:12px; }
</style>
</head>
<body>
<header>
  <h1>NextTrack worker <span id="app-id"></span></h1>
  <span class="pill" id="state">connecting...</span>
  <span class="pill">model <b id="model-version">-</b></span>
  <span class="pill">encoder <b id="encoder">-</b></span>
  <span class="pill"><span id="n-tracks">-</span> tracks</span>
</header>

<section id="group" hidden>
<h2>Workers on this machine (<span id="group-state">-</span>)</h2>
<table><thead><tr><th>Worker</th><th class="num">Port</th><th class="num">PID</th>
  <th>State</th><th class="num">Restarts</th><th>By reason</th><th>Last exit</th>
  <th>Started</th></tr></thead><tbody id="group-rows"></tbody></table>
</section>

<h2>Throughput (last <span id="rate-window">-</span> s)</h2>
<div class="grid">
  <div class="tile"><div class="label">Events / s</div><div class="value" id="eps">-</div>
    <div class="sub"><span id="events-total">-</span> since start</div></div>
  <div class="tile"><div class="label">Recommendations / s</div>
    <div class="value" id="rps">-</div>
    <div class="sub"><span id="recs-total">-</span> since start</div></div>
  <div class="tile"><div class="label">Dead letters / s</div><div class="value" id="dlps">-</div>
    <div class="sub"><span id="dl-total">-</span> since start</div></div>
  <div class="tile"><div class="label">Sessions stored</div><div class="value" id="sessions">-</div>
    <div class="sub">uptime <span id="uptime">-</span></div></div>
</div>

<h2>End-to-end latency (last <span id="latency-window">-</span> s,
  <span id="samples">0</span> events)</h2>
<div class="grid">
  <div class="tile"><div class="label">p50</div><div class="value" id="p50">-</div></div>
  <div class="tile"><div class="label">p90</div><div class="value" id="p90">-</div></div>
  <div class="tile"><div class="label">p95</div><div class="value" id="p95">-</div></div>
  <div class="tile"><div class="label">p99</div><div class="value" id="p99">-</div></div>
  <div class="tile"><div class="label">max</div><div class="value" id="latency-max">-</div></div>
</div>

<h2>A/B variants</h2>
<table><thead><tr><th>Variant</th><th class="num">Share</th><th>Parameters</th>
  <th class="num">Sessions</th><th class="num">Plays judged</th>
  <th class="num">Hit rate@k</th><th class="num">Likes</th><th class="num">Dislikes</th>
  <th class="num">Like share</th></tr></thead><tbody id="ab-rows"></tbody></table>

<h2>Consumer lag (messages behind)</h2>
<table><thead><tr><th>Topic</th><th>By partition</th><th class="num">Lag</th></tr></thead>
  <tbody id="lag-rows"></tbody>
  <tfoot><tr><th>All input partitions of this worker</th>
    <th>worst partition <span id="lag-max">-</span></th>
    <th class="num" id="lag-total">-</th></tr></tfoot></table>

<details><summary>Configuration (secrets masked)</summary>
<table style="margin-top:8px"><tbody id="config-rows"></tbody></table></details>

<script>
"use strict";
let refreshMs = 1500;
const $ = (id) => document.getElementById(id);
const put = (id, text) => { $(id).textContent = text; };
const num = (n) => (n === null || n === undefined) ? "-" : Number(n).toLocaleString("en-US");
const rate = (n) => (n === null || n === undefined) ? "-" : Number(n).toFixed(n < 10 ? 2 : 1);
const pct = (x) => (x === null || x === undefined) ? "-" : (100 * x).toFixed(1) + " %";
function ms(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const v = seconds * 1000;
  return (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)) + " ms";
}
function duration(s) {
  s = Math.floor(s); const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + (s % 60) + "s";
}
function row(cells, numeric) {
  const tr = document.createElement("tr");
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric[i]) td.className = "num";
    tr.appendChild(td);
  });
  return tr;
}
function fill(id, rows, numeric, emptyText, span) {
  const body = $(id);
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr"), td = document.createElement("td");
    td.colSpan = span; td.className = "empty"; td.textContent = emptyText;
    tr.appendChild(td); body.appendChild(tr); return;
  }
  rows.forEach((cells) => body.appendChild(row(cells, numeric)));
}
function clock(t) {
  return (t === null || t === undefined) ? "-" : new Date(t * 1000).toLocaleTimeString();
}
function renderGroup(g) {
  $("group").hidden = !g;
  if (!g) return;
  put("group-state", g.state);
  const body = $("group-rows");
  body.replaceChildren();
  g.workers.forEach((w) => {
    const state = w.state === "restarting" && w.restart_at
      ? "restarting at " + clock(w.restart_at) : w.state;
    const reasons = Object.entries(w.restarts_by_reason || {})
      .filter(([, n]) => n > 0).map(([r, n]) => r + " " + n).join(", ");
    const tr = row([String(w.index), "", w.pid === null ? "-" : String(w.pid), state,
                    num(w.restarts), reasons || "-", w.last_exit || "-", clock(w.started_at)],
                   [false, true, true, false, true, false, false, false]);
    const port = Number(w.port), link = document.createElement("a");
    link.textContent = String(port);
    link.href = location.protocol + "//" + location.hostname + ":" + port + "/status";
    tr.children[1].appendChild(link);
    if (port === g.this_port) {
      tr.className = "self";
      tr.children[0].textContent += " (this page)";
    }
    body.appendChild(tr);
  });
}
function render(s) {
  renderGroup(s.group);
  refreshMs = 1000 * (s.refresh_seconds || 1.5);
  put("app-id", s.app_id);
  put("model-version", s.model.model_version);
  put("encoder", s.model.encoder);
  put("n-tracks", num(s.model.n_tracks));
  const st = s.stream, lat = st.latency_seconds;
  put("rate-window", Math.round(st.rate_window_seconds));
  put("eps", rate(st.events_per_second));
  put("rps", rate(st.recommendations_per_second));
  put("dlps", rate(st.dead_letters_per_second));
  put("events-total", num(st.events_total));
  put("recs-total", num(st.recommendations_total));
  put("dl-total", num(st.dead_letters_total));
  put("uptime", duration(st.uptime_seconds));
  put("sessions", num(s.sessions));
  put("latency-window", Math.round(st.latency_window_seconds));
  put("samples", num(lat.count));
  put("p50", ms(lat.p50)); put("p90", ms(lat.p90)); put("p95", ms(lat.p95));
  put("p99", ms(lat.p99)); put("latency-max", ms(lat.max));
  put("lag-total", num(s.lag.total)); put("lag-max", num(s.lag.max));
  const topics = new Map();
  s.lag.partitions.forEach((p) => {
    if (!topics.has(p.topic)) topics.set(p.topic, []);
    topics.get(p.topic).push(p);
  });
  fill("lag-rows", [...topics].map(([topic, parts]) => [
    topic,
    parts.map((p) => p.partition + ": " + num(p.lag)).join("   "),
    num(parts.reduce((sum, p) => sum + p.lag, 0)),
  ]), [false, false, true], "no partition assigned yet", 3);
  fill("ab-rows", s.ab.variants.map((v) => [
    v.name,
    v.share === undefined ? "-" : pct(v.share),
    v.overrides === undefined ? "-" : v.overrides + (v.top_k ? " (k=" + v.top_k + ")" : ""),
    num(v.sessions),
    num(v.evaluated_plays) + " / " + num(v.hit_rate_sessions) + " sessions",
    pct(v.hit_rate),
    num(v.likes_recommended),
    num(v.dislikes_recommended),
    pct(v.like_share) + " / " + num(v.feedback_sessions) + " sessions",
  ]), [false, true, false, true, true, true, true, true, true],
    s.ab.enabled ? "no events yet" : "no experiment (AB_VARIANTS is empty)", 9);
  fill("config-rows", Object.entries(s.config).map(([k, v]) => [k, v === null ? "" : String(v)]),
       [false, false], "", 2);
}
function setState(text, cls) {
  const el = $("state"); el.textContent = text; el.className = "pill " + cls;
}
async function tick() {
  try {
    const r = await fetch("status.json", {cache: "no-store", credentials: "same-origin"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    setState("live, updated " + new Date().toLocaleTimeString(), "live");
  } catch (e) {
    setState("cannot update: " + e.message, "error");
  }
  setTimeout(tick, refreshMs);
}
tick();
</script>
</body>
</html>
"""
