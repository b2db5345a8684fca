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

// Seconds since digests were last equal beyond which a peer counts as not converged: both states move while
// the nodes ingest, so one unequal comparison (a write in flight) means nothing on its own.
const DIGEST_STALE_S = 15;
const PEER_COLUMNS = ["name", "address", "link", "lag", "offset", "digest"];

function ms(s) { return `${s >= 0 ? "+" : "−"}${Math.abs(s * 1000).toFixed(1)} ms`; }

// What the peer's state digest said: equal, or how long since it was.
function digestText(peer) {
  if (peer.digestCheckedAgeS === undefined) return "not compared yet";
  if (peer.digestEqual) return `equal (${duration(peer.digestCheckedAgeS)} ago)`;
  return peer.digestEqualAgeS === undefined ? "differs (never equal yet)" : `differs (equal ${duration(peer.digestEqualAgeS)} ago)`;
}

function converged(peer) {
  return peer.up && peer.digestEqualAgeS !== undefined && peer.digestEqualAgeS < DIGEST_STALE_S;
}

// body: the peers table's <tbody>; summary: where convergence is said in words. Per peer: link state,
// replication lag, its clock's offset from ours (measured over the replication stream) and whether its state
// digest equals ours, with the digest's age.
export function renderPeers(body, summary, status) {
  const peers = status.peers || [];
  const key = JSON.stringify(peers.map((p) => p.name));
  if (body.dataset.key !== key) { // the peers changed: lay the rows out again
    body.dataset.key = key;
    body.textContent = "";
    for (const peer of peers) {
      const tr = document.createElement("tr");
      tr.dataset.peer = peer.name;
      for (const cls of PEER_COLUMNS) {
        const td = document.createElement("td");
        td.className = cls;
        tr.append(td);
      }
      body.append(tr);
    }
    if (!peers.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = PEER_COLUMNS.length; td.textContent = "no peers";
      tr.append(td); body.append(tr);
    }
  }
  peers.forEach((peer, i) => {
    const tr = body.children[i];
    const offset = peer.clockOffsetS === undefined ? "not measured yet"
      : `${ms(peer.clockOffsetS)} (round trip ${(peer.roundTripS * 1000).toFixed(1)} ms)`;
    const texts = [peer.name, peer.address, peer.up ? "up" : "down", peer.up ? `${(peer.lagS || 0).toFixed(1)} s` : "—",
      offset, digestText(peer)];
    texts.forEach((value, j) => set(tr.children[j], value));
    tr.classList.toggle("down", !peer.up);
    tr.children[5].classList.toggle("bad", peer.up && !converged(peer) && peer.digestCheckedAgeS !== undefined);
  });
  const down = peers.filter((p) => !p.up).length;
  const unknown = peers.filter((p) => p.up && p.digestCheckedAgeS === undefined).length;
  const apart = peers.filter((p) => p.up && p.digestCheckedAgeS !== undefined && !converged(p));
  const ages = peers.filter(converged).map((p) => p.digestEqualAgeS);
  set(summary, !peers.length ? "A single node: nothing to converge with."
    : down ? `${down} of ${peers.length} peers unreachable: not converged.`
      : apart.length ? `Not converged: the state digest of ${apart.map((p) => p.name).join(", ")} has not equalled this node's for ${DIGEST_STALE_S} s or more.`
        : unknown ? `Converging: ${unknown} of ${peers.length} peers have not compared state digests yet.`
          : `Converged: every peer's state digest equalled this node's within the last ${duration(Math.max(...ages))}.`);
  summary.classList.toggle("bad", down > 0 || apart.length > 0);
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

// The heat map: one square per twin in id order, coloured by its health, on one canvas (thousands of twins
// cost one draw, not thousands of elements). A click opens a twin; so does the keyboard: the map takes the
// focus, the arrow keys (Home, End, Page Up, Page Down) move a ring from twin to twin, each named in a live
// region as it is reached, and Enter opens it.
const STEP = CELL + GAP;
const NAMES = { HEALTHY: "healthy", DEGRADED: "degraded", FAILED: "failed", UNKNOWN: "not judged" };

export class HeatMap {
  // live: the element that names the twin the keyboard reached.
  constructor(canvas, open, live) {
    this.canvas = canvas;
    this.live = live;
    this.ids = [];
    this.status = new Map();
    this.timer = 0; this.frame = 0;
    this.cursor = 0; // the twin the keyboard is on
    this.focused = false;
    this.onClick = (event) => { const i = this.at(event); if (i !== undefined) open(this.ids[i]); };
    this.onMove = (event) => { const i = this.at(event); canvas.title = i === undefined ? "" : this.ids[i]; };
    this.onKey = (event) => this.key(event, open);
    this.onFocus = () => { this.focused = true; this.announce(); this.redraw(); };
    this.onBlur = () => { this.focused = false; this.redraw(); };
    canvas.addEventListener("click", this.onClick);
    canvas.addEventListener("mousemove", this.onMove);
    canvas.addEventListener("keydown", this.onKey);
    canvas.addEventListener("focus", this.onFocus);
    canvas.addEventListener("blur", this.onBlur);
    // Its width from a ResizeObserver: reading clientWidth in draw() would force a layout of the page.
    this.width = 0;
    this.resize = new ResizeObserver(([entry]) => {
      const width = Math.round(entry.contentRect.width);
      if (width !== this.width) { this.width = width; this.redraw(); }
    });
    this.resize.observe(canvas);
  }

  stop() {
    this.resize.disconnect();
    clearTimeout(this.timer); cancelAnimationFrame(this.frame);
    for (const [type, fn] of [["click", this.onClick], ["mousemove", this.onMove], ["keydown", this.onKey],
      ["focus", this.onFocus], ["blur", this.onBlur]]) this.canvas.removeEventListener(type, fn);
  }

  at(event) {
    const box = this.canvas.getBoundingClientRect();
    const columns = this.columns();
    const col = Math.floor((event.clientX - box.left) / STEP);
    const i = Math.floor((event.clientY - box.top) / STEP) * columns + col;
    return col < columns && i < this.ids.length ? i : undefined;
  }

  columns() { return Math.max(1, Math.floor((this.width + GAP) / STEP)); }

  key(event, open) {
    const n = this.ids.length;
    if (!n) return;
    const columns = this.columns();
    const moves = {
      ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns,
      PageUp: -10 * columns, PageDown: 10 * columns, Home: -n, End: n,
    };
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open(this.ids[this.cursor]);
      return;
    }
    if (!(event.key in moves)) return;
    event.preventDefault(); // the page does not scroll: the ring moves
    this.cursor = Math.min(n - 1, Math.max(0, this.cursor + moves[event.key]));
    this.announce();
    this.draw();
    const box = this.canvas.getBoundingClientRect(); // keep the ring in view
    const y = box.top + Math.floor(this.cursor / columns) * STEP;
    if (y < 0 || y + STEP > window.innerHeight) window.scrollBy(0, y < 0 ? y - STEP : y + 2 * STEP - window.innerHeight);
  }

  announce() {
    const id = this.ids[this.cursor];
    if (id === undefined) { this.live.textContent = ""; return; }
    const status = NAMES[this.status.get(id) || "UNKNOWN"];
    this.live.textContent = `${id}: ${status} (${this.cursor + 1} of ${this.ids.length}); Enter opens it`;
  }

  // The first draw at the next frame; later ones at most every 250 ms, however often health changes.
  update(ids, status) {
    this.ids = ids; this.status = status;
    if (this.cursor >= ids.length) this.cursor = Math.max(0, ids.length - 1);
    if (this.timer || this.frame) return;
    if (this.drawn === undefined && this.width) { this.draw(); return; } // the first: in this frame
    const wait = this.drawn === undefined ? 0 : Math.max(0, 250 - (performance.now() - this.drawn));
    this.timer = setTimeout(() => { this.timer = 0; this.redraw(); }, wait);
  }

  redraw() { if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); }); }

  draw() {
    this.drawn = performance.now();
    const columns = this.columns();
    const rows = Math.max(1, Math.ceil(this.ids.length / columns));
    const ratio = window.devicePixelRatio || 1;
    const width = this.width, height = rows * STEP;
    const w = Math.round(width * ratio), h = Math.round(height * ratio);
    if (this.canvas.width !== w || this.canvas.height !== h) { // a resize reallocates: only when it changed
      this.canvas.style.height = `${height}px`;
      this.canvas.width = w; this.canvas.height = h;
    }
    const g = this.canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const counts = { HEALTHY: 0, DEGRADED: 0, FAILED: 0, UNKNOWN: 0 };
    const by = { HEALTHY: [], DEGRADED: [], FAILED: [], UNKNOWN: [] };
    this.ids.forEach((id, i) => { by[this.status.get(id) || "UNKNOWN"].push(i); });
    for (const [status, cells] of Object.entries(by)) { // one fill style at a time: few state changes
      counts[status] = cells.length;
      g.fillStyle = COLORS[status];
      for (const i of cells) g.fillRect((i % columns) * STEP, Math.floor(i / columns) * STEP, CELL, CELL);
    }
    if (this.focused && this.ids.length) { // the keyboard's ring
      g.strokeStyle = "#1a1a1a"; g.lineWidth = 2;
      g.strokeRect((this.cursor % columns) * STEP - 1, Math.floor(this.cursor / columns) * STEP - 1, CELL + 2, CELL + 2);
    }
    this.canvas.setAttribute("aria-label", `Health map of ${this.ids.length} twins: ${counts.HEALTHY} healthy, ` +
      `${counts.DEGRADED} degraded, ${counts.FAILED} failed, ${counts.UNKNOWN} not judged. Arrow keys move ` +
      "from twin to twin, Enter opens one.");
  }
}
