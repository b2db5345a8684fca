// The node's HTTP/JSON API (same origin): unary calls as POST, streams as server-sent events.
const BASE = "/api/v2/";
const TOKEN_KEY = "drsdtp-token";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code ? body.code : "UNKNOWN";
  }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(value) { sessionStorage.setItem(TOKEN_KEY, value); }

// Reads whose request got no answer (a failed connection: the node restarting, the network changing under
// the page) are sent again a few times, 0.5 s to 2 s apart, before the failure is shown. Writes are not: one
// that got no answer may have been done.
const READ = /^(WhoAmI|Status|Health|Insight|List|Read|Get)/;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function call(method, body = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const request = { method: "POST", headers, body: JSON.stringify(body) };
  let reply = null;
  for (let attempt = 0; reply === null; attempt++) {
    try {
      reply = await fetch(BASE + method, request);
    } catch (error) {
      if (!READ.test(method) || attempt >= 3) throw error;
      await sleep(500 * 2 ** attempt);
    }
  }
  const parsed = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, parsed);
  return parsed;
}

// The site page's listing: {cursor, twins: [id, ...]} (the dashboard's own compact read, one fetch).
export async function listing() {
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const reply = await fetch("twins.json", { headers });
  const parsed = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, parsed);
  return parsed;
}

// An EventSource on a stream method that stays open. The browser reconnects by itself after a dropped
// connection (resuming with Last-Event-ID), but gives up for good when a reconnect is answered with an error
// status (a restarting node, a proxy's 502, the per-caller stream cap) or the request fails outright (in
// Chromium: the network changed under it). Then a new one is opened after a growing wait (1 s to 30 s),
// resuming after the last event seen, so a page left open keeps following the node. Returns {close()}.
export function events(method, params, onMessage, onState) {
  let source = null, timer = 0, closed = false, wait = 1000, last = "";
  const open = () => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (key === "resume_after" && last) continue;
      for (const item of Array.isArray(value) ? value : [value]) query.append(key, item);
    }
    if (last) query.append("resume_after", last);
    if (token()) query.append("access_token", token());
    source = new EventSource(`${BASE}${method}?${query}`);
    source.onmessage = (event) => {
      if (event.lastEventId) last = event.lastEventId;
      onMessage(JSON.parse(event.data));
    };
    source.onopen = () => { wait = 1000; if (onState) onState(true); };
    source.onerror = () => {
      if (onState) onState(false);
      if (closed || source.readyState !== EventSource.CLOSED) return; // the browser is reconnecting
      timer = setTimeout(open, wait);
      wait = Math.min(wait * 2, 30000);
    };
  };
  open();
  return { close() { closed = true; clearTimeout(timer); source.close(); } };
}

// Physical milliseconds of an HLC stamp (a 64-bit integer written as a string).
export function stampMs(stamp) {
  return stamp ? Number(BigInt(stamp) >> 16n) : 0;
}

// The value a FieldValue holds, for display and plots.
export function valueOf(field) {
  if ("f64" in field) return field.f64;
  if ("i64" in field) return Number(field.i64);
  if ("counter" in field) return Number(field.counter);
  if ("flag" in field) return field.flag;
  if ("text" in field) return field.text;
  if ("blob" in field) return `(${atob(field.blob).length} bytes)`;
  if ("set" in field) return (field.set.elements || []).join(", ");
  if ("desired" in field) return (field.desired.values || []).map(valueOf);
  return null;
}
