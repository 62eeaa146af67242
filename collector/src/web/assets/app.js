// The collector's status page. Read-only: it fetches the JSON views under /api/ and redraws
// the view in the address bar's fragment (#/fleet, #/node/N, #/device/N/D, #/alerts,
// #/incidents, #/incident/ID, #/maintenance) whenever /api/events says something changed.
// Everything the collector sends is put in the page as text (textContent), never as markup.
"use strict";

const PING_LIMIT_MS = 16000; // three pings missed: the collector is lost
const $ = (sel) => document.querySelector(sel);

// ---- small DOM helpers ----------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const badge = (word) => h("span", { class: `badge s-${word}` }, word);
const link = (href, text) => h("a", { href }, text);
const nodeHref = (n) => `#/node/${encodeURIComponent(n)}`;
const deviceHref = (n, d) => `#/device/${encodeURIComponent(n)}/${encodeURIComponent(d)}`;
const incidentHref = (id) => `#/incident/${encodeURIComponent(id)}`;

function age(iso) {
  if (!iso || iso === "-") return "-";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  let s = Math.round((Date.now() - t) / 1000);
  const future = s < 0;
  s = Math.abs(s);
  const text = s < 90 ? `${s} s` : s < 5400 ? `${Math.round(s / 60)} min` : s < 172800 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}
const when = (iso) => h("time", { datetime: iso || "", title: iso || "" }, age(iso));
const ms = (n) => (n === null || n === undefined ? "-" : n < 60000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n / 60000)} min`);
const short = (hash) => (hash ? h("span", { class: "hash", title: hash }, hash.slice(0, 12)) : "-");

function table(id, caption, headers, rows, empty) {
  if (!rows.length) return h("p", { class: "empty", id }, empty);
  return h("div", { class: "scroll" },
    h("table", { id },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", class: t.startsWith("~") ? "wide" : null }, t.replace(/^~/, ""))))),
      h("tbody", {}, rows)));
}
function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// ---- fetching and the connection state -------------------------------------------------
const conn = { lastEvent: 0, lost: null, lostAt: null }; // lost: null until the first word from the stream

async function api(path) {
  let res;
  try {
    res = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch (e) {
    setLost(true);
    throw new Error(`cannot reach the collector (${e.message})`);
  }
  const body = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  return body;
}

function setLost(lost) {
  if (lost === conn.lost) return;
  conn.lost = lost;
  const el = $("#conn");
  const banner = $("#lost");
  if (lost) {
    conn.lostAt = new Date();
    el.dataset.state = "lost";
    el.textContent = "Lost the collector";
    banner.hidden = false;
    banner.textContent = `Lost the collector at ${conn.lostAt.toLocaleTimeString()}: what you see is from then. Reconnecting…`;
  } else {
    el.dataset.state = "live";
    el.textContent = "Live";
    banner.hidden = true;
    banner.textContent = "";
  }
}

function connect() {
  const source = new EventSource("/api/events");
  const alive = () => {
    conn.lastEvent = Date.now();
    setLost(false);
  };
  source.addEventListener("change", () => {
    alive();
    refresh();
  });
  source.addEventListener("ping", alive);
  source.addEventListener("open", alive);
  source.addEventListener("error", () => {
    // EventSource reconnects by itself; the page says so while it does.
    if (source.readyState !== EventSource.OPEN) setLost(true);
  });
  setInterval(() => {
    if (conn.lastEvent && Date.now() - conn.lastEvent > PING_LIMIT_MS) setLost(true);
  }, 1000);
}

// ---- routing ----------------------------------------------------------------------------
function route() {
  const raw = location.hash.replace(/^#\/?/, "") || "fleet";
  const [path, query] = raw.split("?");
  const parts = path.split("/").map((p) => {
    try {
      return decodeURIComponent(p);
    } catch (e) {
      return p; // a malformed escape: shown as typed, and the view says it found nothing
    }
  });
  return { view: parts[0], args: parts.slice(1), params: new URLSearchParams(query || "") };
}
function go(view, params) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined)).toString();
  location.hash = `#/${view}${q ? `?${q}` : ""}`;
}

const views = { fleet: fleetView, node: nodeView, device: deviceView, alerts: alertsView, incidents: incidentsView, incident: incidentView, maintenance: maintenanceView };
let drawing = null; // the refresh in flight, so events arriving meanwhile coalesce into one
let again = false;
let navigatedSince = false; // a navigation arrived while drawing: the next draw moves focus

async function refresh(navigated) {
  if (drawing) {
    again = true;
    navigatedSince = navigatedSince || Boolean(navigated);
    return drawing;
  }
  drawing = (async () => {
    do {
      again = false;
      await draw(navigated);
      navigated = navigatedSince;
      navigatedSince = false;
    } while (again);
  })();
  try {
    await drawing;
  } finally {
    drawing = null;
  }
}

async function draw(navigated) {
  const r = route();
  const view = views[r.view] || fleetView;
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.dataset.nav === r.view || (a.dataset.nav === "fleet" && ["node", "device"].includes(r.view)) || (a.dataset.nav === "incidents" && r.view === "incident");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  summary().catch(() => {});
  let content;
  try {
    content = await view(r);
  } catch (e) {
    content = [h("h1", { tabindex: "-1" }, "Could not load this view"), h("p", { class: "error", id: "error" }, e.message)];
  }
  const main = $("#main");
  // A redraw must not take the keyboard's place away: remember what had focus (by id, or by
  // what it is: a link's target, a button's words, the heading) and give it back.
  const active = document.activeElement;
  // (main itself keeps focus through a redraw: only its children are replaced.)
  const key = active && active !== main && main.contains(active) ? focusKey(active) : null;
  const caret = active && typeof active.selectionStart === "number" ? active.selectionStart : null;
  main.replaceChildren(...[content].flat());
  // The heading can take focus (after a navigation, and back after a redraw).
  for (const heading of main.querySelectorAll("h1")) heading.setAttribute("tabindex", "-1");
  const again = key && !navigated ? findByKey(main, key) : null;
  if (again) {
    again.focus({ preventScroll: true });
    if (caret !== null && again.setSelectionRange) again.setSelectionRange(caret, caret);
  } else if (navigated) {
    const heading = main.querySelector("h1");
    if (heading) heading.focus({ preventScroll: true });
  }
  const h1 = main.querySelector("h1");
  document.title = `${h1 ? h1.textContent : "Status"} · Health collector`;
  main.dataset.drawn = String(Date.now());
}

function focusKey(el) {
  if (el.id) return { id: el.id };
  return { tag: el.tagName, href: el.getAttribute("href"), text: el.textContent };
}

function findByKey(root, key) {
  if (key.id) return root.querySelector(`#${CSS.escape(key.id)}`);
  for (const el of root.querySelectorAll(key.tag)) {
    if (el.getAttribute("href") === key.href && el.textContent === key.text) return el;
  }
  return null;
}

async function summary() {
  const s = await api("/api/summary");
  const states = s.nodes_by_state || {};
  const item = (label, value, key) => h("span", { "data-count": key }, `${label} `, h("b", {}, String(value)));
  const pr = s.firing_by_priority || {};
  $("#summary").replaceChildren(
    item("Nodes", s.nodes, "nodes"),
    ...["CRITICAL", "WARNING", "UNKNOWN", "OK"].map((st) => item(st, states[st] || 0, st)),
    item("Stale", s.stale, "stale"),
    item("Devices", s.devices, "devices"),
    item("Alerts firing", s.firing, "firing"),
    ...["P0", "P1", "P2", "P3"].filter((p) => pr[p]).map((p) => item(p, pr[p], p)),
    item("Suppressed", s.suppressed, "suppressed"),
    item("Maintenance windows", s.maintenance, "maintenance"),
  );
}

// ---- shared pieces ---------------------------------------------------------------------
function filters(view, params, fields) {
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() });
  const apply = () => {
    const next = {};
    for (const f of fields) next[f.name] = form.elements[f.name].value.trim();
    go(view, next);
  };
  for (const f of fields) {
    const id = `f-${f.name}`;
    let input;
    if (f.options) {
      // An option is a word (its own value; "all" is no filter) or [value, label].
      const pairs = f.options.map((o) => (Array.isArray(o) ? o : [o === "all" ? "" : o, o]));
      input = h("select", { id, name: f.name, onchange: apply }, pairs.map(([value, label]) => h("option", { value, selected: (params.get(f.name) || "") === value }, label)));
    } else {
      let timer;
      input = h("input", { id, name: f.name, type: "search", value: params.get(f.name) || "", placeholder: f.placeholder || "", autocomplete: "off", oninput: () => { clearTimeout(timer); timer = setTimeout(apply, 300); } });
    }
    form.append(h("label", { for: id }, f.label, input));
  }
  return form;
}

function pager(view, params, paging) {
  const page = paging.page;
  const to = (p) => () => {
    const next = Object.fromEntries(params.entries());
    next.page = String(p);
    go(view, next);
  };
  return h("div", { class: "pager", id: "pager" },
    h("button", { type: "button", disabled: page <= 1, onclick: to(page - 1) }, "‹ Previous"),
    h("span", {}, `Page ${page} of ${paging.pages} (${paging.total} in all)`),
    h("button", { type: "button", disabled: page >= paging.pages, onclick: to(page + 1) }, "Next ›"));
}

function query(params, keys) {
  const q = new URLSearchParams();
  for (const k of keys) if (params.get(k)) q.set(k, params.get(k));
  return q.toString();
}

function conditionRows(conditions) {
  return conditions.map((c) => h("tr", { "data-code": c.code },
    h("td", {}, badge(c.severity)),
    h("td", {}, h("code", {}, c.code)),
    h("td", {}, c.subject),
    h("td", {}, c.message, h("div", { class: "runbook" }, c.runbook ? `Runbook: ${c.runbook}` : "")),
    h("td", {}, when(c.since))));
}
const CONDITION_HEADERS = ["Severity", "Code", "Subject", "What, and the runbook step", "Since"];

function alertRows(alerts) {
  return alerts.map((a) => h("tr", { "data-fingerprint": a.fingerprint, "data-status": a.status },
    h("td", {}, a.priority ? badge(a.priority) : "-", a.escalated ? " escalated" : ""),
    h("td", {}, badge(a.status)),
    h("td", {}, a.alertname || a.name),
    h("td", {}, link(nodeHref(a.node), a.node)),
    h("td", {}, a.device ? link(deviceHref(a.node, a.device), a.subject) : a.subject),
    h("td", {}, badge(a.severity)),
    h("td", {}, when(a.starts_at || a.pending_since)),
    h("td", {}, a.suppressed_by ? `Maintenance: ${a.suppressed_by}` : a.silenced_by.length ? `Silenced by ${a.silenced_by.join(", ")}` : "-"),
    h("td", { class: "wide" }, a.message)));
}
const ALERT_HEADERS = ["Priority", "Status", "Alert", "Node", "Subject", "Severity", "Since", "Silence or maintenance", "~Message"];

function actionRows(actions, withDevice) {
  return actions.slice().reverse().map((a) => h("tr", {},
    h("td", {}, when(a.started_at)),
    withDevice ? h("td", {}, a.device_id || "-") : null,
    h("td", {}, a.action),
    h("td", {}, badge(a.outcome)),
    h("td", {}, a.caller),
    h("td", { class: "wide" }, a.message),
    h("td", {}, short(a.audit_hash))));
}

function reading(device, quantity) {
  const vals = (device.readings || []).filter((r) => r.quantity === quantity).map((r) => r.value);
  return vals.length ? Math.max(...vals) : null;
}
const fmt = (v, unit, digits = 1) => (v === null || v === undefined ? "-" : `${v.toFixed(digits)} ${unit}`);

// ---- views ------------------------------------------------------------------------------
async function fleetView(r) {
  const p = r.params;
  const data = await api(`/api/nodes?${query(p, ["q", "state", "page", "per_page"])}`);
  const rows = data.nodes.map((n) => h("tr", { "data-node": n.node, "data-state": n.stale ? "STALE" : n.state },
    h("td", {}, link(nodeHref(n.node), n.node)),
    h("td", {}, badge(n.state), n.stale ? [" ", badge("STALE")] : null, n.maintenance ? [" ", badge("MAINTENANCE")] : null),
    h("td", { class: "num" }, n.device_count),
    h("td", { class: "num" }, n.alerts_firing, n.alerts_suppressed ? ` (+${n.alerts_suppressed} suppressed)` : ""),
    h("td", {}, when(n.last_seen)),
    h("td", { class: "wide" }, n.peer)));
  return [
    h("h1", {}, "Fleet"),
    filters("fleet", p, [
      { name: "q", label: "Node name contains", placeholder: "e.g. rack3" },
      { name: "state", label: "State", options: ["all", "CRITICAL", "WARNING", "UNKNOWN", "OK", "STALE"] },
    ]),
    table("nodes", "Nodes, worst first", ["Node", "State", "Devices", "Alerts firing", "Last report", "~Peer"], rows, "No node matches."),
    pager("fleet", p, data.paging),
  ];
}

async function nodeView(r) {
  const name = r.args[0] || "";
  const data = await api(`/api/node/${encodeURIComponent(name)}`);
  const s = data.node.summary || {};
  const snap = data.node.snapshot || {};
  const host = snap.host || {};
  const devices = snap.devices || [];
  const nodeMaint = snap.maintenance;
  const deviceRows = devices.map((d) => h("tr", { "data-device": d.id, "data-state": d.state },
    h("td", {}, link(deviceHref(name, d.id), d.id)),
    h("td", {}, d.kind),
    h("td", {}, badge(d.state)),
    h("td", { class: "num" }, fmt(reading(d, "temperature_celsius"), "°C")),
    h("td", { class: "num" }, fmt(reading(d, "power_watts"), "W")),
    h("td", {}, d.conditions.length ? d.conditions.map((c) => h("div", {}, h("code", {}, c.code), `: ${c.message}`, h("div", { class: "runbook" }, c.runbook ? `Runbook: ${c.runbook}` : ""))) : "none"),
    h("td", {}, remediation(d, snap.recent_actions || []))));
  const hostConditions = (host.conditions || []);
  const processes = (host.processes || []).map((p) => h("tr", {},
    h("td", {}, p.name), h("td", { class: "num" }, p.pid), h("td", {}, p.state), h("td", { class: "num" }, fmt(p.cpu_percent, "%")),
    h("td", { class: "num" }, fmt((p.rss_bytes || 0) / 1e6, "MB", 0)), h("td", { class: "num" }, `${Math.round(p.runtime_seconds || 0)} s`)));
  const services = (host.services || []).map((sv) => h("tr", {},
    h("td", {}, sv.name), h("td", {}, `${sv.active_state || "-"} (${sv.sub_state || "-"})`),
    h("td", {}, [sv.health_url ? `health ${sv.http_status || "no answer"}${sv.health_error ? `: ${sv.health_error}` : ""}` : null, sv.port ? ` port ${sv.port} ${sv.listening ? "listening" : "NOT listening"}` : null].filter(Boolean).join(";") || "-"),
    h("td", {}, when(sv.checked_at))));
  return [
    h("h1", {}, `Node ${name}`),
    facts([
      ["State", [badge(s.state), s.stale ? [" ", badge("STALE"), " no report for a while: readings are old"] : null]],
      ["Last report", when(s.last_seen)],
      ["Agent", `${snap.agent_version || "-"}, boot ${s.boot_id || "-"}, seq ${s.last_seq}`],
      ["Reports", `${s.reports_total} received, ${s.duplicates_total} duplicates, ${s.missing_total} missing`],
      nodeMaint ? ["Maintenance", `until ${nodeMaint.until || "SLURM releases it"}: ${nodeMaint.reason} (by ${nodeMaint.by})`] : null,
      ["Host", `CPU ${fmt((host.cpu_utilization_ratio || 0) * 100, "%")} of ${host.cpu_count}, memory ${fmt(((host.memory_total_bytes || 0) - (host.memory_available_bytes || 0)) / 1e9, "GB")} used of ${fmt((host.memory_total_bytes || 0) / 1e9, "GB")}, load ${(host.load || []).map((x) => x.toFixed(2)).join(" ")}`],
      ["Uplink", snap.agent ? `${snap.agent.uplink_connected ? "connected" : "NOT connected"} to ${snap.agent.collector || "-"}, ${snap.agent.reports_buffered} buffered, ${snap.agent.reports_dropped_total} dropped` : "-"],
    ]),
    h("h2", {}, "Alerts"),
    table("node-alerts", "Alerts of this node", ALERT_HEADERS, alertRows(data.alerts), "No alert."),
    h("h2", {}, "Devices"),
    table("devices", "Devices with readings, conditions and remediation", ["Device", "Kind", "State", "Hottest", "Power", "Conditions (runbook step)", "Remediation"], deviceRows, "No device reported."),
    h("h2", {}, "Host conditions"),
    table("host-conditions", "Conditions of the host", CONDITION_HEADERS, conditionRows(hostConditions), "None."),
    h("h2", {}, "Services"),
    table("services", "Services the agent checks", ["Service", "systemd state", "Checks", "Checked"], services, "No service rule."),
    h("h2", {}, "Processes"),
    table("processes", "Processes matching the agent's rules", ["Rule", "PID", "State", "CPU", "Memory", "Running for"], processes, "No process matches a rule."),
    h("h2", {}, "Recent actions"),
    table("actions", "The agent's recent actions, newest first", ["When", "Device", "Action", "Outcome", "By", "~Message", "Audit"], actionRows(snap.recent_actions || [], true), "No action yet."),
  ];
}

// What the report says about a device's remediation: its activity, maintenance, and the
// last automatic (policy) step and the last action of anyone.
function remediation(d, actions) {
  const parts = [];
  if (d.maintenance) parts.push(h("div", {}, badge("MAINTENANCE"), ` until ${d.maintenance.until || "released"}: policies hold`));
  if (d.activity && d.activity !== "RUNNING") parts.push(h("div", {}, `Now: ${d.activity.toLowerCase()}`));
  const policy = actions.filter((a) => a.device_id === d.id && (a.caller || "").startsWith("policy:")).pop();
  if (policy) parts.push(h("div", {}, `Policy step: ${policy.action} `, badge(policy.outcome), ` (${policy.caller}, `, when(policy.started_at), ")"));
  if (d.last_action && (!policy || d.last_action.action !== policy.action)) parts.push(h("div", {}, `Last action: ${d.last_action.action} `, badge(d.last_action.outcome)));
  return parts.length ? parts : "none";
}

function chart(title, unit, points, startIso, step, id) {
  const width = 600, height = 160, left = 44, right = 8, top = 10, bottom = 22;
  const vals = points.filter((v) => v !== null);
  const svg = (tag, attrs) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  };
  const fig = h("figure", { class: "chart" }, h("figcaption", {}, `${title} (${unit}), last ${Math.round((points.length * step) / 60)} min, one point per ${step} s`));
  if (!vals.length) {
    fig.append(h("p", { class: "empty" }, "No reading in this period."));
    return fig;
  }
  let lo = Math.min(...vals), hi = Math.max(...vals);
  // A flat line is drawn flat: the axis spans at least 2 % of the value (or 1 unit), so
  // sensor noise of a tenth of a degree does not fill the chart.
  const span = Math.max(1, Math.abs((lo + hi) / 2) * 0.02);
  if (hi - lo < span) {
    const mid = (lo + hi) / 2;
    lo = mid - span / 2;
    hi = mid + span / 2;
  }
  const x = (i) => left + (i * (width - left - right)) / Math.max(points.length - 1, 1);
  const y = (v) => top + ((hi - v) * (height - top - bottom)) / (hi - lo);
  const root = svg("svg", { class: "chart", id, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}: from ${lo.toFixed(1)} to ${hi.toFixed(1)} ${unit}, latest ${vals[vals.length - 1].toFixed(1)} ${unit}`, "data-points": String(vals.length) });
  for (const v of [lo, (lo + hi) / 2, hi]) {
    root.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    const label = svg("text", { class: "axis", x: 2, y: y(v) + 4 });
    label.textContent = v.toFixed(1);
    root.append(label);
  }
  const start = Date.parse(startIso);
  for (const [i, text] of [[0, new Date(start).toLocaleTimeString()], [points.length - 1, "now"]]) {
    const t = svg("text", { class: "axis", x: Math.min(x(i), width - 30), y: height - 4 });
    t.textContent = text;
    root.append(t);
  }
  // Gaps (steps without a report) break the line.
  let d = "", pen = false;
  points.forEach((v, i) => {
    if (v === null) { pen = false; return; }
    d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
    pen = true;
    root.append(svg("circle", { class: "dot", cx: x(i), cy: y(v), r: 2 }));
  });
  root.append(svg("path", { class: "line", d }));
  fig.append(root);
  return fig;
}

async function deviceView(r) {
  const [node, id] = r.args;
  const data = await api(`/api/device/${encodeURIComponent(node || "")}/${encodeURIComponent(id || "")}`);
  const d = data.device;
  const readings = (d.readings || []).map((x) => h("tr", {}, h("td", {}, x.sensor), h("td", {}, x.quantity), h("td", { class: "num" }, Number(x.value).toFixed(3)), h("td", {}, when(x.observed_at))));
  const c = data.chart;
  const history = data.history.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.kind), h("td", {}, e.name), h("td", {}, e.status), h("td", { class: "wide" }, e.message), h("td", {}, short(e.audit_hash))));
  return [
    h("h1", {}, `Device ${d.id} on `, link(nodeHref(node), node)),
    facts([
      ["State", [badge(d.state), data.stale ? [" ", badge("STALE"), " the node stopped reporting"] : null]],
      ["Kind", `${d.kind} ${d.model || ""}`],
      ["Activity", d.activity],
      ["Power limit", d.power_limit_watts === null ? "none" : fmt(d.power_limit_watts, "W")],
      ["Last read", when(d.last_read_at)],
      ["Remediation", remediation(d, data.actions)],
    ]),
    h("h2", {}, "Last hour"),
    c ? h("div", { class: "charts" },
      chart("Hottest sensor", "°C", c.temperature_c, c.start, c.step_seconds, "chart-temperature"),
      chart("Power", "W", c.power_w, c.start, c.step_seconds, "chart-power"))
      : h("p", { class: "empty" }, "No temperature or power reported yet."),
    h("h2", {}, "Conditions"),
    table("conditions", "Conditions with their runbook step", CONDITION_HEADERS, conditionRows(d.conditions || []), "None: the device is healthy."),
    h("h2", {}, "Alerts"),
    table("device-alerts", "Alerts about this device", ALERT_HEADERS, alertRows(data.alerts), "No alert."),
    h("h2", {}, "Readings"),
    table("readings", "The latest readings", ["Sensor", "Quantity", "Value", "Observed"], readings, "No reading."),
    h("h2", {}, "Actions"),
    table("device-actions", "Recent actions on this device, newest first", ["When", "Action", "Outcome", "By", "~Message", "Audit"], actionRows(data.actions, false), "No recent action."),
    h("h2", {}, "History (24 h)"),
    table("device-history", "From the collector's history", ["When", "Kind", "Name", "Status", "~Message", "Audit"], history, "No history (or the collector keeps none)."),
  ];
}

async function alertsView(r) {
  const p = r.params;
  const data = await api(`/api/alerts?${query(p, ["q", "status", "priority", "page", "per_page"])}`);
  return [
    h("h1", {}, "Alerts"),
    filters("alerts", p, [
      { name: "q", label: "Node, subject or alert contains" },
      { name: "status", label: "Status", options: ["all", "FIRING", "SUPPRESSED"] },
      { name: "priority", label: "Priority", options: ["all", "P0", "P1", "P2", "P3"] },
    ]),
    table("alerts", "Active alerts, highest priority first", ALERT_HEADERS, alertRows(data.alerts), "No alert matches."),
    pager("alerts", p, data.paging),
  ];
}

async function incidentsView(r) {
  const p = r.params;
  const data = await api(`/api/incidents?${query(p, ["open", "since", "node", "page", "per_page"])}`);
  const rows = data.incidents.map((i) => h("tr", { "data-incident": i.id, "data-state": i.state },
    h("td", {}, link(incidentHref(i.id), i.id)),
    h("td", {}, badge(i.state)),
    h("td", {}, i.priority ? badge(i.priority) : "-"),
    h("td", {}, link(nodeHref(i.node), i.node)),
    h("td", {}, i.detection),
    h("td", {}, when(i.opened_at)),
    h("td", { class: "num" }, ms(i.time_to_detect_ms)),
    h("td", { class: "num" }, i.resolved_at ? ms(i.time_to_resolve_ms) : "-")));
  return [
    h("h1", {}, "Incidents"),
    filters("incidents", p, [
      { name: "node", label: "Node" },
      { name: "since", label: "Opened within", options: [["", "7 days"], ["1h", "1 hour"], ["24h", "24 hours"], ["30d", "30 days"], ["90d", "90 days"]] },
      { name: "open", label: "Which", options: [["", "all"], ["true", "open only"]] },
    ]),
    table("incidents", "Incidents, newest first", ["Incident", "State", "Priority", "Node", "Detected by", "Opened", "Time to detect", "Time to resolve"], rows, "No incident in this period."),
    pager("incidents", p, data.paging),
  ];
}

async function incidentView(r) {
  const id = r.args[0] || "";
  const i = await api(`/api/incident/${encodeURIComponent(id)}`);
  const base = `/api/incident/${encodeURIComponent(id)}`;
  const rows = i.timeline.map((t) => h("tr", {},
    h("td", {}, h("time", { datetime: t.at }, t.at)), h("td", {}, t.actor), h("td", {}, t.what), h("td", {}, t.outcome || "-"), h("td", {}, short(t.audit_hash))));
  const notes = i.notes.map((n) => h("li", {}, `${n.at} (${n.by}): ${n.text}`));
  return [
    h("h1", {}, `Incident ${i.id}`),
    facts([
      ["State", badge(i.state)],
      ["Priority", i.priority ? badge(i.priority) : "-"],
      ["Node", link(nodeHref(i.node), i.node)],
      ["Summary", i.summary],
      ["Detected by", i.detection],
      ["Subjects", i.subjects.join(", ")],
      ["Opened", [h("time", { datetime: i.opened_at }, i.opened_at), " (first alert firing)"]],
      ["Resolved", i.resolved_at || "not yet"],
      ["Time to detect", ms(i.time_to_detect_ms)],
      ["Time to resolve", i.resolved_at ? ms(i.time_to_resolve_ms) : "-"],
      ["Fixed by", i.resolution || "none recorded"],
      ["Export", [h("a", { href: `${base}/export.md`, download: "" }, "Post-mortem (markdown)"), " · ", h("a", { href: `${base}/export.json`, download: "" }, "JSON")]],
    ]),
    h("h2", {}, "Timeline"),
    table("timeline", "Oldest first, with the audit entry behind each step", ["Time (UTC)", "Actor", "What", "Outcome", "Audit"], rows, "No entry."),
    h("h2", {}, "Notes"),
    notes.length ? h("ul", { id: "notes" }, notes) : h("p", { class: "empty" }, `No note yet: agent-ctl incident ${i.id} note "…"`),
  ];
}

async function maintenanceView() {
  const data = await api("/api/maintenance");
  const windows = data.windows.map((w) => h("tr", { "data-node": w.node },
    h("td", {}, link(nodeHref(w.node), w.node)),
    h("td", {}, w.device ? link(deviceHref(w.node, w.device), w.device) : "whole node"),
    h("td", {}, when(w.until), " ", h("span", { class: "meta" }, w.until)),
    h("td", {}, w.reason), h("td", {}, w.by), h("td", {}, short(w.audit_hash))));
  const silences = data.silences.map((s) => h("tr", {},
    h("td", {}, h("code", {}, s.id)),
    h("td", {}, s.origin),
    h("td", {}, s.matchers.map((m) => `${m.name}${m.is_equal === false ? "!" : ""}${m.is_regex ? "=~" : "="}${m.value}`).join(", ")),
    h("td", {}, when(s.ends_at)), h("td", {}, s.created_by), h("td", { class: "wide" }, s.comment), h("td", {}, s.state)));
  return [
    h("h1", {}, "Maintenance and silences"),
    h("h2", {}, "Maintenance windows"),
    table("windows", "Subjects whose alerts are suppressed and whose policies hold", ["Node", "Device", "Until", "Reason", "By", "Audit"], windows, "No maintenance window."),
    h("h2", {}, "Silences"),
    table("silences", "Silences made through this collector", ["ID", "Origin", "Matchers", "Ends", "Created by", "~Comment", "State"], silences, "No silence."),
  ];
}

// ---- start --------------------------------------------------------------------------------
window.addEventListener("hashchange", () => refresh(true));
document.addEventListener("DOMContentLoaded", () => {
  // The skip link moves focus without touching the fragment, which is the page's route.
  $(".skip").addEventListener("click", (e) => {
    e.preventDefault();
    $("#main").focus();
  });
  connect();
  refresh(false);
  // Ages ("12 s ago") move even when nothing changes.
  setInterval(() => {
    for (const t of document.querySelectorAll("time[datetime]")) if (t.title) t.textContent = age(t.getAttribute("datetime"));
  }, 5000);
});
