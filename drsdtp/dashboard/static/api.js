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

export async function call(method, body = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const reply = await fetch(BASE + method, { method: "POST", headers, body: JSON.stringify(body) });
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

// An EventSource on a stream method; it reconnects (and resumes, for Watch) by itself.
export function events(method, params, onMessage, onState) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) query.append(key, item);
  }
  if (token()) query.append("access_token", token());
  const source = new EventSource(`${BASE}${method}?${query}`);
  source.onmessage = (event) => onMessage(JSON.parse(event.data));
  source.onopen = () => onState && onState(true);
  source.onerror = () => onState && onState(false);
  return source;
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
