// The operator's dashboard: the site (every twin with its health, active alarms) and one twin (live fields
// with quality, age, health, desired values and a sparkline), over the node's HTTP API and its events.
import { ApiError, call, events, listing, setToken, stampMs, valueOf } from "./api.js";
import { actingPanel } from "./act.js";
import { plotPanel } from "./plot.js";
import { HeatMap, renderNode, renderPeers, renderSeverities } from "./site.js";
import { draw, sparkline } from "./spark.js";
import { TwinList } from "./twinlist.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const HISTORY_MS = 10 * 60 * 1000;
const MAX_POINTS = 600;

const ROLES = ["viewer", "operator", "engineer", "admin"];
let view = null;
let me = { identity: "", role: "viewer" }; // WhoAmI: who the node takes this page for
let statusNow = null, statusBefore = null; // the last two Status replies (rates from their difference)
const onStatus = new Set(); // the open view's listeners of each Status reply

function canAct() { return ROLES.indexOf(me.role) >= ROLES.indexOf("operator"); }

// A typed value from what was typed: a number, true/false, else text.
function typed(raw) {
  const value = raw.trim();
  if (value !== "" && !Number.isNaN(Number(value))) return { f64: Number(value) };
  if (value === "true" || value === "false") return { flag: value === "true" };
  return { text: value };
}

function text(element, value) {
  if (element.textContent !== value) element.textContent = value;
}

function show(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  return String(value);
}

function age(ms) {
  if (!ms) return "—";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 60 ? `${s.toFixed(0)} s` : s < 3600 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
}

function internal(name) {
  return name.startsWith("_") || name.endsWith(".q") || name.endsWith(".desired");
}

function deleted(twin) {
  return (twin.fields || []).some((f) => f.name === "_deleted" && f.flag === true);
}

// Calls fn now and every `ms` until stopped; an error other than "not allowed" is shown, not thrown. A
// call the node cannot answer yet (503: e.g. Health before its first intelligence pass) is simply retried;
// a refused one (400) less often.
function every(ms, fn) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    let wait = ms;
    try { await fn(); } catch (error) {
      if (error instanceof ApiError && error.status === 400) wait = Math.max(ms, 15000);
      else if (!(error instanceof ApiError && error.status === 503)) failed(error);
    }
    if (!stopped) setTimeout(tick, wait);
  };
  tick();
  return () => { stopped = true; };
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) { login(error.message); return; }
  if (error instanceof ApiError && error.status === 403) return; // this caller may not: leave it out
  text($("link"), `error: ${error.message}`);
  $("link").classList.add("down");
}

function login(why) {
  for (const id of ["site", "twin"]) $(id).hidden = true;
  $("login").hidden = false;
  text($("login-why"), why);
  $("token").focus();
}

function linkState(up) {
  text($("link"), up ? "live" : "reconnecting…");
  $("link").classList.toggle("down", !up);
}

// ----- the site ----------------------------------------------------------------------------------------

function siteView() {
  $("site").hidden = false; $("twin").hidden = true;
  document.title = "drsdtp: twins";
  const list = $("twins");
  list.textContent = "";
  let all = []; // every twin id, sorted
  const health = new Map(); // twin id -> TwinHealthSummary
  const healthStatus = new Map(); // twin id -> its status (the heat map's colours)
  const filter = $("filter");
  const href = (id) => `#/twin/${encodeURIComponent(id)}`;
  const twins = new TwinList(list, href, (id) => {
    const h = health.get(id);
    return [h ? h.status : "UNKNOWN", h ? `${h.status.toLowerCase()} · quality ${h.quality.toFixed(2)}` : "no health yet"];
  });
  const heat = new HeatMap($("heat"), (id) => { location.hash = href(id); }, $("heat-cell"));
  let frame = 0;
  const render = () => { // once per frame, however many changes arrived in it
    frame = 0;
    twins.show(filter.value ? all.filter((id) => id.startsWith(filter.value)) : all);
    twins.render(); // in this frame (show alone would wait for the next)
    const counts = { HEALTHY: 0, DEGRADED: 0, FAILED: 0 };
    for (const h of health.values()) counts[h.status] = (counts[h.status] || 0) + 1;
    text($("summary"), `${all.length} twins: ${counts.HEALTHY} healthy, ${counts.DEGRADED} degraded, ${counts.FAILED} failed`);
    heat.update(all, healthStatus);
  };
  const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };
  const where = (id) => { // where id is, or would go, in the sorted list
    let lo = 0, hi = all.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (all[mid] < id) lo = mid + 1; else hi = mid; }
    return lo;
  };

  // One compact fetch of every twin id, then only what changes after it (Watch resumed at its cursor): a
  // Watch snapshot would send every twin as an event of its own. A fetch that got no answer (the node
  // restarting, the network changing) is tried again after a growing wait; a refusal is shown.
  let source = null, stopped = false, retry = 0;
  const follow = ({ cursor, twins: ids }) => {
    if (stopped) return;
    all = ids;
    schedule();
    source = events("Watch", { fields: ["_scope", "_model", "_deleted"], resume_after: cursor }, (change) => {
      const id = change.twin.twinId;
      if (id.startsWith("_")) return;
      const at = where(id);
      const known = all[at] === id;
      if (deleted(change.twin)) { if (known) { all.splice(at, 1); schedule(); } } else if (!known) { all.splice(at, 0, id); schedule(); }
    }, linkState);
  };
  const load = (fetched, wait) => fetched.then(follow, (error) => {
    if (stopped) return;
    failed(error);
    if (!(error instanceof ApiError)) retry = setTimeout(() => load(listing(), Math.min(wait * 2, 30000)), wait);
  });
  load(prefetched || listing(), 1000);
  prefetched = null;
  const onFilter = () => schedule();
  filter.addEventListener("input", onFilter);
  const stopHealth = every(POLL_MS, async () => {
    const reply = await call("Health", {});
    const changed = [];
    for (const t of reply.twins || []) {
      const old = health.get(t.twinId);
      health.set(t.twinId, t);
      healthStatus.set(t.twinId, t.status);
      if (!old || old.status !== t.status || old.quality !== t.quality) changed.push(t.twinId);
    }
    if (changed.length) { twins.touch(changed); schedule(); }
  });
  const stopAlarms = every(POLL_MS, async () => {
    const reply = await call("ListAlarms", { active: true });
    renderAlarms(reply, $("alarm-list"), $("alarms"));
    renderSeverities($("severities"), reply.alarms || []);
  });
  const overview = () => {
    renderNode($("node-facts"), statusNow, statusBefore);
    renderPeers($("peers").tBodies[0], $("convergence"), statusNow);
  };
  if (statusNow) overview();
  onStatus.add(overview);
  return {
    stop() {
      stopped = true;
      clearTimeout(retry);
      if (source) source.close();
      stopHealth(); stopAlarms(); onStatus.delete(overview); twins.stop(); heat.stop();
      cancelAnimationFrame(frame);
      filter.removeEventListener("input", onFilter);
    },
  };
}

function renderAlarms(reply, list, section) {
  const alarms = reply.alarms || [];
  if (section) section.hidden = alarms.length === 0;
  const key = JSON.stringify(alarms.map((a) => [a.id, a.state, a.message])) + canAct();
  if (list.dataset.key === key) return; // unchanged: keep the buttons (and the focus) where they are
  list.dataset.key = key;
  list.textContent = "";
  if (!alarms.length) { const li = document.createElement("li"); li.textContent = "none"; list.append(li); }
  for (const alarm of alarms) {
    const li = document.createElement("li");
    li.dataset.alarm = alarm.id;
    li.innerHTML = '<span></span> <a></a>: <span></span> <em></em>';
    const [sev, twin, message, state] = li.children;
    sev.className = `sev-${alarm.severity}`; text(sev, alarm.severity.toUpperCase());
    twin.href = `#/twin/${encodeURIComponent(alarm.twinId)}`; text(twin, alarm.twinId);
    text(message, alarm.message || alarm.rule); text(state, `(${alarm.state})`);
    if (canAct() && alarm.state === "active") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "ack";
      button.textContent = "Acknowledge";
      button.setAttribute("aria-label", `Acknowledge ${alarm.severity} alarm ${alarm.rule} on ${alarm.twinId}`);
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          await call("AcknowledgeAlarm", { alarmId: alarm.id, reason: "acknowledged in the dashboard" });
          text(state, "(acknowledged)");
          button.remove();
        } catch (error) { button.disabled = false; failed(error); }
      });
      li.append(" ", button);
    }
    list.append(li);
  }
}

// ----- one twin ----------------------------------------------------------------------------------------

function twinView(id) {
  $("site").hidden = true; $("twin").hidden = false;
  document.title = `drsdtp: ${id}`;
  text($("twin-title"), id);
  text($("twin-meta"), "");
  const body = $("fields").tBodies[0];
  body.textContent = "";
  const rows = new Map(); // field -> {tr, cells, points, svg, stamp}
  let fields = new Map();
  // From the model insight: plant seconds per wall second, and each field's unit and limits.
  const meta = { timeScale: 1, fields: {} };
  const plot = plotPanel($("plot"), id, meta);
  call("Insight", { twinId: id, kind: "model" }).then((r) => {
    const doc = JSON.parse(r.json);
    meta.timeScale = doc.time_scale || 1;
    meta.fields = doc.model?.fields || {};
    for (const [name, r2] of rows) unit(name, r2);
    plot.modelKnown();
  }).catch(() => { plot.modelKnown(); }); // no model: plain plots
  const unit = (name, r) => {
    const u = (meta.fields[name]?.unit || "").trim(); // the model's units carry a leading space
    text(r.tr.querySelector("th .unit"), u ? `(${u})` : "");
  };
  const acting = actingPanel($("acting"), id, (role) => ROLES.indexOf(me.role) >= ROLES.indexOf(role), plot, () => meta.timeScale);

  const row = (name) => {
    let r = rows.get(name);
    if (r) return r;
    const tr = document.createElement("tr");
    tr.dataset.field = name;
    tr.innerHTML = '<th scope="row"></th><td class="value"></td><td class="desired"></td><td class="quality"></td>' +
      '<td class="age"></td><td class="health"></td><td class="plot"></td>';
    tr.firstChild.innerHTML = '<span class="name"></span><span class="unit"></span>';
    text(tr.firstChild.firstChild, name);
    const desiredCell = tr.querySelector(".desired");
    desiredCell.innerHTML = '<span class="wanted"></span>';
    if (canAct()) desiredCell.append(desireForm(id, name));
    const svg = sparkline(`${name}, last 10 minutes`);
    tr.querySelector(".plot").append(svg);
    r = { tr, points: [], svg, stamp: "", ms: 0, value: tr.querySelector(".value"), quality: tr.querySelector(".quality"),
      wanted: desiredCell.firstChild, age: tr.querySelector(".age") };
    rows.set(name, r);
    unit(name, r);
    const names = [...rows.keys()].sort();
    body.insertBefore(tr, rows.get(names[names.indexOf(name) + 1])?.tr || null);
    history(name, r);
    return r;
  };

  const history = async (name, r) => {
    const now = Date.now();
    try {
      const reply = await call("ReadHistory", { twinId: id, field: name, startMs: now - HISTORY_MS, endMs: now, limit: MAX_POINTS });
      const old = (reply.tsMs || []).map((t, i) => [Number(t), reply.values[i]]);
      r.points = [...old.filter(([t]) => !r.points.length || t < r.points[0][0]), ...r.points].slice(-MAX_POINTS);
      draw(r.svg, r.points);
    } catch (error) { /* no history for this field (text, or history off): the plot stays empty */ }
  };

  // Each change is taken as it arrives (readings into the plot's and sparklines' series: no DOM work), and
  // the page is written once per animation frame from the latest state, however many changes came in it:
  // at 50 updates/s a frame writes each cell once, and only the cells whose text changed.
  let latest = null, frame = 0;
  const sparks = new Set();
  const take = (twin) => {
    latest = twin;
    for (const field of twin.fields || []) {
      const name = field.name;
      if (internal(name)) continue;
      const r = row(name);
      if (field.stamp === r.stamp) continue;
      r.stamp = field.stamp;
      r.ms = stampMs(field.stamp);
      const value = valueOf(field);
      if (typeof value === "number") {
        plot.offer(name);
        plot.reading(name, r.ms, value);
        r.points.push([r.ms, value]);
        if (r.points.length > MAX_POINTS) r.points.shift();
        sparks.add(r);
      }
    }
    if (!frame) frame = requestAnimationFrame(paint);
  };
  const paint = () => {
    frame = 0;
    const twin = latest;
    fields = new Map((twin.fields || []).map((f) => [f.name, f]));
    const model = fields.get("_model");
    text($("twin-meta"), `${model ? `model ${valueOf(model)} · ` : ""}version ${twin.version}`);
    for (const [name, field] of fields) {
      if (internal(name)) continue;
      const r = rows.get(name);
      const value = valueOf(field);
      text(r.value, show(value));
      const quality = fields.get(`${name}.q`);
      text(r.quality, quality ? show(valueOf(quality)) : "—");
      const desired = fields.get(`${name}.desired`);
      const wanted = desired ? valueOf(desired) : [];
      const conflict = wanted.length > 1;
      if (r.wanted.classList.contains("conflict") !== conflict) r.wanted.classList.toggle("conflict", conflict);
      text(r.wanted, conflict ? `conflict: ${wanted.map(show).join(" | ")}` : wanted.length ? `${show(wanted[0])}${wanted[0] === value ? "" : " (not yet reported)"}` : "—");
    }
    for (const r of sparks) draw(r.svg, r.points);
    sparks.clear();
    ages();
  };
  const ages = () => { for (const r of rows.values()) text(r.age, age(r.ms)); };

  const source = events("Watch", { twin_ids: id }, (change) => take(change.twin), linkState);
  const ticker = setInterval(ages, 1000);
  const stopHealth = every(POLL_MS, async () => {
    const reply = await call("Health", { twinIds: [id] });
    const twin = (reply.twins || [])[0];
    const bad = new Map((twin ? twin.fields : []).map((f) => [f.field, f]));
    for (const [name, r] of rows) {
      const f = bad.get(name);
      const status = f ? f.status : twin ? "HEALTHY" : "";
      const reasons = f ? f.reasons : [];
      r.tr.dataset.health = status;
      r.tr.classList.toggle("stale", reasons.includes("STALE"));
      const cell = r.tr.querySelector(".health");
      const label = status ? `${status.toLowerCase()}${reasons.length ? `: ${reasons.join(", ").toLowerCase()}` : ""}` : "—";
      if (cell.textContent !== label) {
        cell.textContent = "";
        if (status) {
          const badge = document.createElement("span");
          badge.className = `badge ${reasons.includes("STALE") ? "stale" : status}`;
          badge.textContent = label;
          cell.append(badge);
        } else cell.textContent = label;
      }
    }
  });
  const stopAlarms = every(POLL_MS, async () => {
    const reply = await call("ListAlarms", { twinId: id });
    renderAlarms(reply, $("twin-alarms"));
    plot.alarms(reply.alarms || []);
  });
  return {
    stop() { source.close(); cancelAnimationFrame(frame); clearInterval(ticker); stopHealth(); stopAlarms(); plot.stop(); acting.stop(); },
  };
}

// Sets a desired value of the field (a Write; the node turns it into a command where an actuator acts).
function desireForm(twin, field) {
  const form = document.createElement("form");
  form.className = "act";
  const input = document.createElement("input");
  input.name = "desired";
  input.size = 6;
  input.setAttribute("aria-label", `New desired value of ${field}`);
  const button = document.createElement("button");
  button.type = "submit";
  button.textContent = "Set";
  button.setAttribute("aria-label", `Set the desired value of ${field}`);
  const outcome = document.createElement("span");
  outcome.className = "outcome";
  outcome.setAttribute("role", "status");
  form.append(input, button, outcome);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (input.value.trim() === "") return;
    button.disabled = true;
    try {
      await call("Write", { twins: [{ twinId: twin, ops: [{ field, desire: typed(input.value) }] }], reason: "set in the dashboard" });
      text(outcome, "sent");
      input.value = "";
    } catch (error) {
      text(outcome, error.message);
    } finally { button.disabled = false; }
  });
  return form;
}

// ----- start -------------------------------------------------------------------------------------------

let shown = null; // the route the view shows
function route() {
  const match = location.hash.match(/^#\/twin\/(.+)$/);
  const wanted = match ? `twin:${match[1]}` : "site";
  // An in-page link (the skip link's #main) is no new route: the view stays as it is, focus and all.
  if (view && wanted === shown && !location.hash.startsWith("#/")) return;
  if (view) view.stop();
  $("login").hidden = true;
  shown = wanted;
  view = match ? twinView(decodeURIComponent(match[1])) : siteView();
}

async function status() {
  const s = await call("Status");
  statusBefore = statusNow; statusNow = s;
  for (const listener of onStatus) listener();
  const peers = s.peers || [];
  text($("node"), `node ${s.nodeId} · ${s.twins} twins · peers ${peers.filter((p) => p.up).length}/${peers.length} up · you: ${me.identity} (${me.role})`);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("token").value);
  location.reload();
});
window.addEventListener("hashchange", route);
// Who the node takes this page for. A call that got no answer (the node restarting, the network changing
// under the page) is tried again after a growing wait, so a page opened at such a moment still starts; an
// answer that refuses it is final (401: ask for a token).
async function start() {
  for (let wait = 1000; ; wait = Math.min(wait * 2, 30000)) {
    try {
      me = await call("WhoAmI");
      break;
    } catch (error) {
      failed(error);
      if (error instanceof ApiError) {
        if (error.status === 401) return;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
  every(5000, status);
  route();
}

// The site page's listing is asked for at once, beside WhoAmI, not after it: the largest fetch of the page
// starts as early as it can. (Refused, it fails as WhoAmI does: the page asks for a token.)
let prefetched = location.hash.startsWith("#/twin/") ? null : listing();
if (prefetched) prefetched.catch(() => {}); // handled where it is used
start();
