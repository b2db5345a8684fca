// The site overview: this node (clock, ingest rate per adapter, log, recovery), its peers with link state and replication
// lag, alarms by severity, and a health heat map of every twin drawn on one canvas (thousands of twins cost
// one draw, not thousands of elements; the list below it is the accessible way to each twin).
const COLORS = { HEALTHY: "#1b6e20", DEGRADED: "#c98a00", FAILED: "#b00020", UNKNOWN: "#9aa0a6" };
const SEVERITIES = ["critical", "major", "minor", "warning", "info"];
const CELL = 12, GAP = 2;

function set(element, value) { if (element.textContent !== value) element.textContent = value; }

function duration(s) {
  return s < 120 ? `${s.toFixed(0)} s` : s < 7200 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
}

// facts: a <dl>; now, before: StatusReply (before: the previous poll's, for rates).
export function renderNode(facts, now, before) {
  const rate = before && now.uptimeS > before.uptimeS
    ? (Number(now.received) - Number(before.received)) / (now.uptimeS - before.uptimeS) : null;
  const dt = before ? now.uptimeS - before.uptimeS : 0;
  const earlier = new Map(((before && before.adapters) || []).map((a) => [a.name, a]));
  const adapters = (now.adapters || []).map((a) => {
    const old = earlier.get(a.name);
    const perS = old && dt > 0 ? `${((Number(a.received) - Number(old.received)) / dt).toFixed(1)} readings/s` : "measuring…";
    const bad = Number(a.invalid || 0) + Number(a.dropped || 0);
    return [`Ingest: ${a.name}`, `${perS}${bad ? `; ${a.invalid || 0} invalid, ${a.dropped || 0} dropped` : ""}`];
  });
  const rows = [
    ["Node", `${now.nodeId} (drsdtp ${now.version})`],
    ["Up for", duration(now.uptimeS || 0)],
    ["Twins", `${now.twins} twins, ${now.fields} fields`],
    ["Ingest", rate === null ? "measuring…" : `${rate.toFixed(1)} readings/s (all adapters); ${now.invalid || 0} invalid, ${now.dropped || 0} dropped`],
    ...adapters,
    ["Clock offset", now.clockOffsetS === undefined ? "unknown (no NTP answer)" : `${(now.clockOffsetS * 1000).toFixed(1)} ms`],
    ["Log", `${now.walRecords || 0} records`],
    ["Ready", now.notReadyReason ? `no: ${now.notReadyReason}` : "yes"],
  ];
  const terms = rows.map(([term]) => term).join("|");
  if (facts.dataset.terms !== terms) { // the adapters changed: lay the list out again
    facts.dataset.terms = terms;
    facts.textContent = "";
    for (const [term] of rows) {
      const dt = document.createElement("dt"); dt.textContent = term;
      facts.append(dt, document.createElement("dd"));
    }
  }
  rows.forEach(([, value], i) => set(facts.children[i * 2 + 1], value));
  facts.children[rows.length * 2 - 1].classList.toggle("bad", Boolean(now.notReadyReason));
}

// body: the peers table's <tbody>; summary: where convergence is said in words.
export function renderPeers(body, summary, status) {
  const peers = status.peers || [];
  const key = JSON.stringify(peers.map((p) => [p.name, p.address, p.up, Math.round((p.lagS || 0) * 10)]));
  if (body.dataset.key !== key) {
    body.dataset.key = key;
    body.textContent = "";
    for (const peer of peers) {
      const tr = document.createElement("tr");
      tr.dataset.peer = peer.name;
      const lag = peer.lagS || 0;
      for (const [cls, text] of [["name", peer.name], ["address", peer.address],
        ["link", peer.up ? "up" : "down"], ["lag", peer.up ? `${lag.toFixed(1)} s` : "—"]]) {
        const td = document.createElement("td");
        td.className = cls;
        td.textContent = text;
        tr.append(td);
      }
      tr.classList.toggle("down", !peer.up);
      body.append(tr);
    }
    if (!peers.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 4; td.textContent = "no peers";
      tr.append(td); body.append(tr);
    }
  }
  const down = peers.filter((p) => !p.up).length;
  const behind = peers.filter((p) => p.up && (p.lagS || 0) >= 1).length;
  set(summary, !peers.length ? "A single node: nothing to converge with."
    : down ? `${down} of ${peers.length} peers unreachable: not converged.`
      : behind ? `${behind} peers have not acknowledged every change yet (converging).`
        : "Converged: every peer is up and has acknowledged every change.");
  summary.classList.toggle("bad", down > 0);
}

export function renderSeverities(list, alarms) {
  const counts = new Map(SEVERITIES.map((s) => [s, 0]));
  for (const a of alarms) if (a.state !== "cleared") counts.set(a.severity, (counts.get(a.severity) || 0) + 1);
  if (list.children.length !== SEVERITIES.length) {
    list.textContent = "";
    for (const severity of SEVERITIES) {
      const li = document.createElement("li");
      li.dataset.severity = severity;
      li.className = `sev-${severity}`;
      list.append(li);
    }
  }
  for (const li of list.children) {
    const n = counts.get(li.dataset.severity) || 0;
    set(li, `${li.dataset.severity}: ${n}`);
    li.classList.toggle("zero", n === 0);
  }
}

// The heat map: one square per twin in id order, coloured by its health; a click opens the twin.
export class HeatMap {
  constructor(canvas, open) {
    this.canvas = canvas;
    this.ids = [];
    this.status = new Map();
    this.frame = 0;
    canvas.addEventListener("click", (event) => {
      const id = this.at(event);
      if (id) open(id);
    });
    canvas.addEventListener("mousemove", (event) => { canvas.title = this.at(event) || ""; });
    // Its width from a ResizeObserver: reading clientWidth in draw() would force a layout of the whole
    // page (thousands of cards) while they are still arriving.
    this.width = 0;
    new ResizeObserver(([entry]) => {
      const width = Math.round(entry.contentRect.width);
      if (width !== this.width) { this.width = width; this.update(this.ids, this.status); }
    }).observe(canvas);
  }

  at(event) {
    const box = this.canvas.getBoundingClientRect();
    const columns = this.columns();
    const col = Math.floor((event.clientX - box.left) / (CELL + GAP));
    const row = Math.floor((event.clientY - box.top) / (CELL + GAP));
    return col < columns ? this.ids[row * columns + col] : undefined;
  }

  columns() { return Math.max(1, Math.floor((this.width + GAP) / (CELL + GAP))); }

  // At most one draw every 250 ms: while thousands of twins arrive, the list comes first.
  update(ids, status) {
    this.ids = ids; this.status = status;
    if (this.frame) return;
    const wait = Math.max(0, 250 - (performance.now() - (this.drawn || 0)));
    this.frame = setTimeout(() => requestAnimationFrame(() => { this.frame = 0; this.drawn = performance.now(); this.draw(); }), wait);
  }

  draw() {
    const columns = this.columns();
    const rows = Math.max(1, Math.ceil(this.ids.length / columns));
    const ratio = window.devicePixelRatio || 1;
    const width = this.width, height = rows * (CELL + GAP);
    const w = Math.round(width * ratio), h = Math.round(height * ratio);
    if (this.canvas.width !== w || this.canvas.height !== h) { // a resize reallocates: only when it changed
      this.canvas.style.height = `${height}px`;
      this.canvas.width = w; this.canvas.height = h;
    }
    const g = this.canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const counts = { HEALTHY: 0, DEGRADED: 0, FAILED: 0, UNKNOWN: 0 };
    for (const status of Object.keys(COLORS)) { // one fill style at a time: few state changes
      g.fillStyle = COLORS[status];
      this.ids.forEach((id, i) => {
        if ((this.status.get(id) || "UNKNOWN") !== status) return;
        counts[status] += 1;
        g.fillRect((i % columns) * (CELL + GAP), Math.floor(i / columns) * (CELL + GAP), CELL, CELL);
      });
    }
    this.canvas.setAttribute("aria-label", `Health map of ${this.ids.length} twins: ${counts.HEALTHY} healthy, ` +
      `${counts.DEGRADED} degraded, ${counts.FAILED} failed, ${counts.UNKNOWN} not judged`);
  }
}
