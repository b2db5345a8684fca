// A time-series plot in SVG, no library: one field's history (raw points as a line; a downsampled tier as its
// min-max band and mean), live points, the forecast with its interval, limit lines, and anomalies and alarms
// as markers on the same time axis. Zoom and pan with its buttons or by dragging a range; every change of the
// data is drawn at most once per animation frame, so a fast field costs one redraw per frame, not per update,
// and incrementally: the series are drawn once in the coordinates of the window they were laid out in, and
// while the window only slides (following now) and the value range holds, a frame moves them with one
// transform and appends the new live points, instead of rewriting every point's coordinates.
const NS = "http://www.w3.org/2000/svg";
const W = 800, H = 260;
const PAD = { left: 56, right: 12, top: 12, bottom: 28 };
const MAX_LIVE = 4000; // live points kept beyond the loaded history (bounded)
const MAX_APPENDED = 600; // live points appended since the last full layout before laying out again
let charts = 0; // for unique clip path ids

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (parent) parent.append(node);
  return node;
}

// Round tick steps (1, 2, 5 x 10^n) for the value axis.
function niceStep(span, count) {
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
  .map((s) => s * 1000);

function clock(ms, step) {
  const d = new Date(ms);
  const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  return step < 60000 ? `${hm}:${String(d.getSeconds()).padStart(2, "0")}` : hm;
}

export class Chart {
  // onRange(t0, t1) is called after the user zooms or pans (load the history for the new range there).
  constructor(label, onRange) {
    this.label = label;
    this.onRange = onRange;
    this.history = []; // [t, value, lo, hi]: lo/hi only for a downsampled tier
    this.tier = "raw";
    this.live = []; // [t, value] that arrived after the history was read
    this.forecast = []; // [t, value, lower, upper]
    this.whatif = []; // [t, value, lower, upper]: a what-if run on a fork
    this.limits = []; // {value, label}
    this.markers = []; // {t, kind: "anomaly" | "alarm", label, severity}
    this.t0 = 0; this.t1 = 0;
    this.follow = true; // the window's end follows now
    this.frame = 0;
    this.draws = 0; // frames drawn (the bench reads it)

    this.svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
    this.grid = el("g", { class: "grid" }, this.svg);
    const clip = `chart-clip-${++charts}`;
    el("rect", { x: PAD.left, y: 0, width: W - PAD.left - PAD.right, height: H },
      el("clipPath", { id: clip }, el("defs", {}, this.svg)));
    // The series, in the coordinates of their last full layout; `series` maps them to the window.
    const clipped = el("g", { "clip-path": `url(#${clip})` }, this.svg);
    this.series = el("g", { class: "series" }, clipped);
    this.bandFc = el("path", { class: "fc-band" }, this.series);
    this.band = el("path", { class: "band" }, this.series);
    this.line = el("polyline", { class: "line" }, this.series);
    this.fcLine = el("polyline", { class: "fc-line" }, this.series);
    this.wiBand = el("path", { class: "wi-band" }, this.series);
    this.wiLine = el("polyline", { class: "wi-line" }, this.series);
    this.laid = null; // the last full layout: {t0, k, lo, hi, key, live, first, appended}
    this.version = 0; // bumped by every change other than a live point or the window sliding
    this.limitG = el("g", { class: "limits" }, this.svg);
    this.nowLine = el("line", { class: "now" }, this.svg);
    this.markerG = el("g", { class: "markers" }, this.svg);
    this.brush = el("rect", { class: "brush", y: PAD.top, height: H - PAD.top - PAD.bottom, width: 0 }, this.svg);
    this.brushing = null;
    this.svg.addEventListener("pointerdown", (e) => this.startBrush(e));
    this.svg.addEventListener("pointermove", (e) => this.moveBrush(e));
    this.svg.addEventListener("pointerup", (e) => this.endBrush(e));
  }

  // ----- data (each schedules one redraw) ----------------------------------------------------------------

  setWindow(t0, t1, follow) {
    this.t0 = t0; this.t1 = t1; this.follow = follow;
    this.version += 1;
    this.schedule();
  }

  setHistory(points, tier) {
    this.history = points;
    this.tier = tier;
    this.svg.dataset.tier = tier;
    const last = points.length ? points[points.length - 1][0] : -Infinity;
    this.live = this.live.filter(([t]) => t > last);
    this.version += 1;
    this.schedule();
  }

  push(t, value) {
    const last = this.live.length ? this.live[this.live.length - 1][0] : -Infinity;
    if (t <= last) return;
    this.live.push([t, value]);
    if (this.live.length > MAX_LIVE) this.live.splice(0, this.live.length - MAX_LIVE);
    this.schedule();
  }

  setForecast(points) { this.forecast = points; this.version += 1; this.schedule(); }
  setWhatIf(points) { this.whatif = points; this.version += 1; this.schedule(); }
  setLimits(limits) { this.limits = limits; this.version += 1; this.schedule(); }
  setMarkers(markers) { this.markers = markers; this.markerVersion = (this.markerVersion || 0) + 1; this.schedule(); }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  // ----- zoom and pan -------------------------------------------------------------------------------------

  zoom(factor) {
    const end = this.follow ? Date.now() : this.t1;
    const span = Math.max(10000, (end - this.t0) * factor);
    const mid = this.follow ? end : (this.t0 + this.t1) / 2;
    const t0 = this.follow ? end - span : mid - span / 2;
    const t1 = this.follow ? end : mid + span / 2;
    this.changeRange(t0, Math.min(t1, Date.now()), this.follow || t1 >= Date.now());
  }

  pan(fraction) {
    const end = this.follow ? Date.now() : this.t1;
    const span = end - this.t0;
    let t1 = end + span * fraction;
    const follow = t1 >= Date.now();
    if (follow) t1 = Date.now();
    this.changeRange(t1 - span, t1, follow);
  }

  changeRange(t0, t1, follow) {
    this.setWindow(t0, t1, follow);
    if (this.onRange) this.onRange(t0, t1, follow);
  }

  x(t) { return PAD.left + (t - this.t0) / (this.t1 - this.t0 || 1) * (W - PAD.left - PAD.right); }
  tOf(x) { return this.t0 + (x - PAD.left) / (W - PAD.left - PAD.right) * (this.t1 - this.t0); }

  svgX(event) {
    const box = this.svg.getBoundingClientRect();
    return (event.clientX - box.left) / box.width * W;
  }

  startBrush(event) {
    if (event.button !== 0) return;
    this.brushing = this.svgX(event);
    this.svg.setPointerCapture(event.pointerId);
  }

  moveBrush(event) {
    if (this.brushing === null) return;
    const x = this.svgX(event);
    this.brush.setAttribute("x", Math.min(x, this.brushing));
    this.brush.setAttribute("width", Math.abs(x - this.brushing));
  }

  endBrush(event) {
    if (this.brushing === null) return;
    const a = this.tOf(this.brushing), b = this.tOf(this.svgX(event));
    this.brushing = null;
    this.brush.setAttribute("width", 0);
    if (Math.abs(b - a) < 2000) return; // a click, not a range
    const t1 = Math.min(Math.max(a, b), Date.now());
    this.changeRange(Math.min(a, b), t1, false);
  }

  // ----- drawing ------------------------------------------------------------------------------------------

  draw() {
    this.draws += 1;
    if (this.follow) { const span = this.t1 - this.t0; this.t1 = Date.now(); this.t0 = this.t1 - span; }
    this.svg.dataset.span = String(Math.round(this.t1 - this.t0)); // the window, for tests and tools
    this.svg.dataset.follow = String(this.follow);
    const ends = [this.forecast, this.whatif].filter((s) => s.length).map((s) => s[s.length - 1][0]);
    const fcEnd = Math.max(this.t1, ...ends);
    const right = this.follow ? Math.max(this.t1, fcEnd) : this.t1; // the forecast is drawn past now
    const t0 = this.t0, shown = (t) => t >= t0 && t <= right;
    let lo = Infinity, hi = -Infinity;
    const see = (v) => { if (typeof v === "number" && Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; } };
    for (const p of this.history) if (shown(p[0])) { see(p[1]); see(p[2]); see(p[3]); }
    for (const p of this.live) if (shown(p[0])) see(p[1]);
    for (const p of this.forecast) { see(p[1]); see(p[2]); see(p[3]); }
    for (const p of this.whatif) { see(p[1]); see(p[2]); see(p[3]); }
    for (const l of this.limits) see(l.value);
    if (lo === Infinity) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const margin = (hi - lo) * 0.06;
    lo -= margin; hi += margin;
    // Out to whole value ticks: the range (and with it the grid and the series' layout) changes only when a
    // value crosses a tick, not with every new high or low of a moving field.
    const tick = niceStep(hi - lo, 5);
    lo = Math.floor(lo / tick) * tick; hi = Math.ceil(hi / tick) * tick;
    const saved = this.t1;
    this.t1 = right;
    const y = (v) => H - PAD.bottom - (v - lo) / (hi - lo) * (H - PAD.top - PAD.bottom);
    const xy = (t, v) => `${this.x(t).toFixed(1)},${y(v).toFixed(1)}`;

    this.axes(lo, hi, y);
    this.plotSeries(t0, lo, hi, xy, y, shown);

    const limitKey = JSON.stringify([this.limits, lo, hi]);
    if (this.limitKey !== limitKey) this.drawLimits(limitKey, y);
    const now = this.x(Date.now());

    const inside = now >= PAD.left && now <= W - PAD.right;
    this.nowLine.setAttribute("x1", now); this.nowLine.setAttribute("x2", now);
    this.nowLine.setAttribute("y1", PAD.top); this.nowLine.setAttribute("y2", H - PAD.bottom);
    this.nowLine.style.display = inside ? "" : "none";

    // Markers move only when the window moves by a pixel or they change.
    const pixel = (this.t1 - this.t0) / (W - PAD.left - PAD.right);
    const markerKey = `${this.markerVersion},${Math.round(t0 / pixel)},${Math.round(right / pixel)}`;
    if (this.markerKey !== markerKey) this.drawMarkers(markerKey, t0, right);
    this.t1 = saved;
  }

  // The series: appended to and moved with one transform while only live points arrived and the window only
  // slid; laid out afresh otherwise (and every MAX_APPENDED points, or once the transform would stretch them
  // by more than 10 %, so what is drawn stays close to exact).
  plotSeries(t0, lo, hi, xy, y, shown) {
    const k = (W - PAD.left - PAD.right) / (this.t1 - this.t0 || 1);
    const laid = this.laid;
    const first = this.live.length ? this.live[0][0] : null;
    if (laid && laid.version === this.version && laid.lo === lo && laid.hi === hi && laid.first === first &&
        laid.appended + this.live.length - laid.live <= MAX_APPENDED && Math.abs(k / laid.k - 1) < 0.1 &&
        this.live.length >= laid.live) {
      const line = this.line.points;
      const before = line.numberOfItems;
      for (let i = laid.live; i < this.live.length; i += 1) {
        const [t, v] = this.live[i];
        this.plotPoint(line, PAD.left + (t - laid.t0) * laid.k, y(v)); // in the laid-out window's coordinates
      }
      laid.appended += line.numberOfItems - before;
      laid.live = this.live.length;
      const scale = k / laid.k;
      const shift = PAD.left * (1 - scale) + (laid.t0 - t0) * k;
      this.series.setAttribute("transform", `matrix(${scale.toFixed(6)},0,0,1,${shift.toFixed(2)},0)`);
      return;
    }
    this.laid = { version: this.version, t0, k, lo, hi, first, live: this.live.length, appended: 0 };
    this.series.removeAttribute("transform");
    const raw = []; // [x, y] in time order
    for (const p of this.history) if (shown(p[0])) raw.push([this.x(p[0]), y(p[1])]);
    for (const p of this.live) if (p[0] >= t0) raw.push([this.x(p[0]), y(p[1])]); // and later: they slide into view
    const out = decimate(raw);
    this.line.setAttribute("points", out.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" "));
    // Where appends go on from: the last pixel column's points (one, or its first, low, high and last).
    const tail = out.length ? Math.floor(out[out.length - 1][0]) : -1;
    let base = out.length - 1;
    while (base > 0 && Math.floor(out[base - 1][0]) === tail) base -= 1;
    const span = out.slice(Math.max(0, base)).map((p) => p[1]);
    this.column = { x: tail, base, split: span.length > 1, lo: Math.min(...span), hi: Math.max(...span) };
    const banded = this.history.filter((p) => p[2] !== undefined && shown(p[0]));
    this.band.setAttribute("d", banded.length > 1 ? area(banded, xy) : "");
    this.fcLine.setAttribute("points", this.forecast.map((p) => xy(p[0], p[1])).join(" "));
    const fcBand = this.forecast.filter((p) => p[2] !== null && p[3] !== null);
    this.bandFc.setAttribute("d", fcBand.length > 1 ? area(fcBand, xy) : "");
    this.wiLine.setAttribute("points", this.whatif.map((p) => xy(p[0], p[1])).join(" "));
    const wiBand = this.whatif.filter((p) => typeof p[2] === "number" && typeof p[3] === "number");
    this.wiBand.setAttribute("d", wiBand.length > 1 ? area(wiBand, xy) : "");
  }

  // One live point, appended in the laid-out coordinates. Points are kept per pixel column (M4: the first,
  // the lowest, the highest and the last): a column's later points move its low, high or last point in
  // place, so a fast field adds at most four points per pixel to the path however many readings it sends.
  plotPoint(line, x, y) {
    const c = this.column;
    const svgPoint = () => { const p = this.svg.createSVGPoint(); p.x = x; p.y = y; return p; };
    if (!c || c.base < 0 || Math.floor(x) !== c.x) {
      line.appendItem(svgPoint());
      this.column = { x: Math.floor(x), base: line.numberOfItems - 1, split: false, lo: y, hi: y };
      return;
    }
    if (!c.split) { for (let i = 0; i < 3; i += 1) line.appendItem(svgPoint()); c.split = true; }
    c.lo = Math.min(c.lo, y); c.hi = Math.max(c.hi, y);
    line.getItem(c.base + 1).y = c.lo;
    line.getItem(c.base + 2).y = c.hi;
    const last = line.getItem(c.base + 3);
    last.x = x; last.y = y;
  }

  drawLimits(key, y) {
    this.limitKey = key;
    this.limitG.textContent = "";
    for (const limit of this.limits) {
      const ly = y(limit.value).toFixed(1);
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: ly, y2: ly }, this.limitG);
      el("text", { x: W - PAD.right - 4, y: Number(ly) - 4, "text-anchor": "end" }, this.limitG).textContent = limit.label;
    }
  }

  drawMarkers(key, t0, right) {
    this.markerKey = key;
    this.markerG.textContent = "";
    for (const m of this.markers) {
      if (m.t < t0 || m.t > right) continue;
      const mx = this.x(m.t).toFixed(1);
      const shape = m.kind === "alarm"
        ? el("path", { d: `M${mx},${PAD.top} l-6,12 h12 z`, class: `alarm sev-${m.severity}` }, this.markerG)
        : el("circle", { cx: mx, cy: H - PAD.bottom - 7, r: 5, class: `anomaly sev-${m.severity}` }, this.markerG);
      el("title", {}, shape).textContent = m.label;
    }
  }

  axes(lo, hi, y) {
    const step = niceStep(hi - lo, 5);
    const span = this.t1 - this.t0;
    const tStep = TIME_STEPS.find((s) => span / s <= 7) || 86400000;
    // The same value ticks and a window moved by less than a pixel: the grid stands (no DOM work per frame).
    const key = `${lo.toPrecision(6)},${hi.toPrecision(6)},${tStep},${Math.round(this.x(Math.ceil(this.t0 / tStep) * tStep))}`;
    if (this.gridKey === key) return;
    this.gridKey = key;
    this.grid.textContent = "";
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      const gy = y(v).toFixed(1);
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: gy, y2: gy }, this.grid);
      el("text", { x: PAD.left - 6, y: Number(gy) + 4, "text-anchor": "end" }, this.grid).textContent =
        Number(v.toPrecision(6)).toString();
    }
    const offset = new Date().getTimezoneOffset() * 60000; // ticks on local round times
    for (let t = Math.ceil((this.t0 - offset) / tStep) * tStep + offset; t <= this.t1; t += tStep) {
      const gx = this.x(t).toFixed(1);
      el("line", { x1: gx, x2: gx, y1: PAD.top, y2: H - PAD.bottom, class: "v" }, this.grid);
      el("text", { x: gx, y: H - 8, "text-anchor": "middle" }, this.grid).textContent = clock(t, tStep);
    }
  }
}

// M4 decimation: of the points (in time order) falling in one pixel column, only the first, the lowest, the
// highest and the last: the same picture with at most four points a pixel.
function decimate(points) {
  const out = [];
  for (let i = 0; i < points.length;) {
    const column = Math.floor(points[i][0]);
    let j = i, lo = i, hi = i;
    while (j + 1 < points.length && Math.floor(points[j + 1][0]) === column) {
      j += 1;
      if (points[j][1] < points[lo][1]) lo = j;
      if (points[j][1] > points[hi][1]) hi = j;
    }
    out.push(points[i]);
    if (j > i) out.push([points[i][0], points[lo][1]], [points[i][0], points[hi][1]], points[j]);
    i = j + 1;
  }
  return out;
}

// The closed outline between the lower (index 2) and upper (index 3) values of points.
function area(points, xy) {
  const top = points.map((p) => xy(p[0], p[3]));
  const bottom = points.map((p) => xy(p[0], p[2])).reverse();
  return `M${top.join("L")}L${bottom.join("L")}Z`;
}
