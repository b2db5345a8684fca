// The twin page's plot of one field: its history at the tier the node picks for the range (raw when zoomed
// in, a downsampled tier's min-max band when zoomed out), live readings, the forecast with its interval, the
// limits it would cross and when, and the twin's anomalies and alarms on the same time axis.
import { call } from "./api.js";
import { Chart } from "./chart.js";

const RANGES = [["10 min", 10 * 60e3], ["1 h", 3600e3], ["6 h", 6 * 3600e3], ["24 h", 24 * 3600e3]];
const MAX_POINTS = 800; // history points asked per read (about one per two pixels)
const SLOW_MS = 10000; // forecast and anomalies: every intelligence pass or so

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (title) b.setAttribute("aria-label", title);
  b.addEventListener("click", onClick);
  return b;
}

function minutes(m) {
  return m < 1 ? "under a minute" : m < 90 ? `${Math.round(m)} min` : `${(m / 60).toFixed(1)} h`;
}

// panel: the <section> to fill; twin: its id; meta: {timeScale: plant seconds per wall second (forecast
// horizons and anomaly times are in plant time), fields: the model's field specs (units, limits)}.
export function plotPanel(panel, twin, meta) {
  const timeScale = () => meta.timeScale;
  panel.textContent = "";
  const heading = document.createElement("h3");
  heading.id = "plot-title";
  heading.textContent = "Plot";
  const tools = document.createElement("div");
  tools.className = "plot-tools";
  const chooser = document.createElement("select");
  chooser.id = "plot-field";
  const chooserLabel = document.createElement("label");
  chooserLabel.htmlFor = chooser.id;
  chooserLabel.textContent = "Field";
  // The history tier: auto lets the node pick the finest one that fits the range; raw or a downsampled tier
  // on request (the node's default tiers; another config's are named in its refusal).
  const detail = document.createElement("select");
  detail.id = "plot-tier";
  for (const [value, text] of [["auto", "auto"], ["raw", "raw readings"], ["1m", "1 min buckets"], ["15m", "15 min buckets"]]) {
    const option = document.createElement("option");
    option.value = value; option.textContent = text;
    detail.append(option);
  }
  const detailLabel = document.createElement("label");
  detailLabel.htmlFor = detail.id;
  detailLabel.textContent = "Detail";
  const ranges = document.createElement("div");
  ranges.setAttribute("role", "group");
  ranges.setAttribute("aria-label", "Time range");
  const tier = document.createElement("span");
  tier.className = "tier";
  tier.setAttribute("aria-live", "polite");
  const summary = document.createElement("p");
  summary.className = "forecast-summary";
  summary.setAttribute("aria-live", "polite");
  const events = document.createElement("ul");
  events.className = "plot-events";
  tools.append(chooserLabel, chooser, detailLabel, detail, ranges, tier);
  panel.append(heading, tools);

  let field = "";
  let chart = null;
  let reads = 0; // a newer read makes an older reply stale
  let alarms = [], anomalies = [];
  let whatif = null; // {label, series: {field: points}}: the last what-if run, plotted for the shown field
  const numeric = new Set();
  const latest = new Map(); // field -> its last live reading [t, value]: the new plot of a field starts with it

  const load = async (t0, t1) => {
    if (!chart) return;
    const mine = ++reads;
    let reply;
    try {
      reply = await call("ReadHistory", { twinId: twin, field, startMs: Math.floor(t0), endMs: Math.ceil(t1),
        limit: MAX_POINTS, resolution: detail.value });
    } catch (error) {
      if (mine === reads) tier.textContent = `history: ${error.message}`;
      return;
    }
    if (mine !== reads) return;
    const ts = reply.tsMs || [], values = reply.values || [];
    const raw = !reply.resolution || reply.resolution === "raw";
    chart.setHistory(ts.map((t, i) => raw ? [Number(t), values[i]] : [Number(t), values[i], reply.min[i], reply.max[i]]),
      reply.resolution || "raw");
    tier.textContent = ts.length ? `history: ${raw ? "raw readings" : `${reply.resolution} buckets (min–max band)`}` : "no history in this range";
  };

  const window_ = (span) => {
    const now = Date.now();
    chart.setWindow(now - span, now, true);
    load(now - span, now).catch(() => {});
  };
  for (const [label, span] of RANGES) {
    ranges.append(button(label, `Show the last ${label}`, () => window_(span)));
  }
  ranges.append(
    button("−", "Zoom out", () => chart.zoom(2)),
    button("+", "Zoom in", () => chart.zoom(0.5)),
    button("◀", "Earlier", () => chart.pan(-0.5)),
    button("▶", "Later", () => chart.pan(0.5)),
  );

  const choose = (name) => {
    field = name;
    chooser.value = name;
    const old = chart;
    chart = new Chart(`${name} over time: history, live readings, forecast with its interval, limits, anomalies and alarms`,
      (t0, t1) => load(t0, t1).catch(() => {}));
    if (old) old.svg.replaceWith(chart.svg); else panel.append(chart.svg, summary, events);
    window_(RANGES[0][1]);
    if (latest.has(name)) chart.push(...latest.get(name));
    chart.setWhatIf(whatif?.series[name] || []);
    chart.setLimits(limits(name));
    slow().catch(() => {});
    markers();
  };
  chooser.addEventListener("change", () => choose(chooser.value));
  detail.addEventListener("change", () => {
    if (!chart) return;
    const end = chart.follow ? Date.now() : chart.t1;
    load(chart.t0, end).catch(() => {});
  });
  let modelSeen = false;
  const limited = (name) => { const f = meta.fields[name] || {}; return f.low_limit != null || f.high_limit != null; };
  let picking = 0;
  // After the current event (a twin's first change offers all its fields at once), so the choice sees them all.
  const pick = () => { if (!picking) picking = setTimeout(choosePreferred, 0); };
  const choosePreferred = () => {
    picking = 0;
    if (field || !modelSeen || !numeric.size) return;
    const names = [...numeric].sort();
    choose(names.find(limited) || names[0]);
  };
  // The model's limits of the field (the forecast's crossings say when it would reach them).
  const limits = (name) => {
    const f = meta.fields[name] || {};
    const unit = f.unit ? ` ${f.unit.trim()}` : "";
    return [["low", f.low_limit], ["high", f.high_limit]].filter(([, v]) => typeof v === "number")
      .map(([side, v]) => ({ value: v, label: `${side} limit ${v}${unit}` }));
  };

  const markers = () => {
    if (!chart) return;
    const scale = timeScale();
    const mine = anomalies.filter((a) => a.field === field).map((a) => ({
      t: a.tS / scale * 1000, kind: "anomaly", severity: a.severity.toLowerCase(),
      label: `${a.kind} (${a.severity.toLowerCase()})${a.detail ? `: ${a.detail}` : ""}`,
    }));
    const raised = alarms.map((a) => ({
      t: Number(a.raisedMs), kind: "alarm", severity: a.severity, label: `alarm ${a.rule}: ${a.message} (${a.state})`,
    }));
    chart.setMarkers([...mine, ...raised]);
    const items = [...mine, ...raised].sort((a, b) => b.t - a.t).slice(0, 5);
    const key = JSON.stringify(items);
    if (events.dataset.key === key) return;
    events.dataset.key = key;
    events.textContent = "";
    for (const m of items) {
      const li = document.createElement("li");
      li.className = m.kind;
      li.textContent = `${new Date(m.t).toLocaleTimeString()} ${m.label}`;
      events.append(li);
    }
  };

  // The forecast (plant minutes ahead, turned into wall time) and the thresholds it would cross.
  const slow = async () => {
    if (!chart) return;
    const name = field;
    const [forecast, anomalyReply] = await Promise.all([
      call("Insight", { twinId: twin, kind: "forecast", paramsJson: JSON.stringify({ fields: [name] }) })
        .then((r) => JSON.parse(r.json).forecasts[0]).catch(() => null),
      call("ListAnomalies", { twinId: twin, limit: 200 }).catch(() => ({})),
    ]);
    if (name !== field) return;
    anomalies = anomalyReply.anomalies || [];
    markers();
    const scale = timeScale();
    if (!forecast || forecast.refused) {
      chart.setForecast([]);
      summary.textContent = forecast ? `No forecast: ${forecast.refused}` : "No forecast for this field.";
      return;
    }
    const t = forecast.t_s / scale * 1000;
    chart.setForecast([[t, forecast.value_now, forecast.value_now, forecast.value_now],
      ...forecast.horizons.filter((h) => h.value !== null)
        .map((h) => [t + h.horizon_min * 60e3 / scale, h.value, h.lower, h.upper])]);
    const far = forecast.horizons[forecast.horizons.length - 1];
    const parts = far && far.value !== null
      ? [`Forecast (${forecast.method}): ${far.value.toPrecision(4)} in ${minutes(far.horizon_min / scale)}` +
         (far.lower !== null ? ` (${far.lower.toPrecision(4)} to ${far.upper.toPrecision(4)}, ${Math.round(far.confidence * 100)} %)` : "")]
      : [];
    for (const c of forecast.crossings) {
      parts.push(c.eta_min === null ? `${c.direction} limit ${c.threshold} not reached in the look-ahead`
        : c.eta_min === 0 ? `past the ${c.direction} limit ${c.threshold} now`
          : `reaches the ${c.direction} limit ${c.threshold} in ${minutes(c.eta_min / scale)}`);
    }
    summary.textContent = parts.join(". ") || "No forecast yet.";
  };
  const timer = setInterval(() => slow().catch(() => {}), SLOW_MS);

  return {
    // A numeric field seen on the twin: offered in the chooser (the first one is plotted).
    offer(name) {
      if (numeric.has(name)) return;
      numeric.add(name);
      const option = document.createElement("option");
      option.value = option.textContent = name;
      const after = [...chooser.options].find((o) => o.value > name);
      chooser.insertBefore(option, after || null);
      pick();
    },
    // The model is known (or known to be missing): plot a field it sets limits on, else the first one.
    modelKnown() { modelSeen = true; pick(); },
    reading(name, t, value) {
      latest.set(name, [t, value]);
      if (name === field && chart) chart.push(t, value);
    },
    alarms(list) { alarms = list; markers(); },
    // A what-if run (null: none): its trajectory of the shown field is drawn beside the live twin's.
    whatIf(run) {
      whatif = run;
      const mine = run?.series[field];
      if (chart) chart.setWhatIf(mine || []);
      if (run && !mine && Object.keys(run.series).length) choose(Object.keys(run.series).find((f) => numeric.has(f)) || field);
    },
    get chart() { return chart; },
    stop() { clearInterval(timer); clearTimeout(picking); reads += 1; },
  };
}
