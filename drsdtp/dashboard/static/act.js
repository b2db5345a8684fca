// Acting on one twin, each part shown only to a role that may do it (the node checks again): commands with
// their lifecycle and the interlock's answer (operator), what-if runs on a fork plotted against the live twin
// (anyone), snapshots and rollback with confirmation, and the audit trail (engineer).
import { call } from "./api.js";

const POLL_MS = 1000;

function node(tag, attrs = {}, text = "") {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") element.className = value; else element.setAttribute(key, value);
  }
  if (text) element.textContent = text;
  return element;
}

function labelled(id, label, attrs = {}) {
  const input = node("input", { id, name: id, autocomplete: "off", ...attrs });
  return [node("label", { for: id }, label), input];
}

function time(ms) { return ms ? new Date(Number(ms)).toLocaleTimeString() : "—"; }

export function typed(raw) {
  const value = raw.trim();
  if (value !== "" && !Number.isNaN(Number(value))) return { f64: Number(value) };
  if (value === "true" || value === "false") return { flag: value === "true" };
  return { text: value };
}

function show(field) {
  if (!field) return "";
  for (const key of ["f64", "i64", "flag", "text"]) if (key in field) return String(field[key]);
  return "";
}

// A form whose submit runs `act` (class "act": it changes the twin, only for roles that may); its outcome line says what the node answered.
function actForm(cls, label, parts, act) {
  const form = node("form", { class: cls });
  const button = node("button", { type: "submit" }, label);
  const outcome = node("span", { class: "outcome", role: "status" });
  form.append(...parts, button, outcome);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try { outcome.textContent = await act(); } catch (error) { outcome.textContent = `refused: ${error.message}`; }
    finally { button.disabled = false; }
  });
  return form;
}

// section: the twin page's acting <section>; role checks from WhoAmI; plot: the plot panel (what-if).
export function actingPanel(section, twin, may, plot, timeScale) {
  section.textContent = "";
  const stops = [];
  section.append(node("h3", { id: "acting-title" }, "Acting"));

  // ----- commands ---------------------------------------------------------------------------------------
  const commands = node("section", { class: "commands", "aria-labelledby": "commands-title" });
  commands.append(node("h4", { id: "commands-title" }, "Commands"));
  if (may("operator")) {
    commands.append(actForm("act command", "Issue", [
      ...labelled("command-action", "Action", { size: 10, required: "" }),
      ...labelled("command-value", "Value", { size: 6 }),
    ], async () => {
      const action = section.querySelector("#command-action").value.trim();
      const raw = section.querySelector("#command-value").value;
      const request = { twinId: twin, action, reason: "issued in the dashboard" };
      if (raw.trim() !== "") request.value = typed(raw);
      const reply = await call("IssueCommand", request);
      refresh();
      const c = reply.command;
      return `${c.commandId.slice(0, 8)}: ${c.state}${c.held ? ` (held: ${c.held})` : ""}${c.why ? ` (${c.why})` : ""}`;
    }));
  }
  const table = node("table", { class: "command-list" });
  table.innerHTML = "<caption>Recent commands, live: state, interlock and the device's answer</caption>" +
    '<thead><tr><th scope="col">Issued</th><th scope="col">Action</th><th scope="col">Value</th>' +
    '<th scope="col">State</th><th scope="col">Why / held / result</th></tr></thead><tbody></tbody>';
  commands.append(table);
  section.append(commands);
  const refresh = async () => {
    const reply = await call("ListCommands", { twinId: twin, limit: 8 });
    const list = reply.commands || [];
    const key = JSON.stringify(list.map((c) => [c.commandId, c.state, c.held, c.why, c.result]));
    const body = table.tBodies[0];
    if (body.dataset.key === key) return;
    body.dataset.key = key;
    body.textContent = "";
    for (const c of list) {
      const tr = node("tr", { "data-command": c.commandId, "data-state": c.state });
      for (const text of [time(c.issuedMs), c.action, show(c.value), c.state,
        [c.held && `held: ${c.held}`, c.why, c.result && `device: ${c.result}`].filter(Boolean).join("; ")]) {
        tr.append(node("td", {}, text));
      }
      body.append(tr);
    }
    if (!list.length) { const tr = node("tr"); tr.append(node("td", { colspan: "5" }, "none")); body.append(tr); }
  };
  const poller = setInterval(() => refresh().catch(() => {}), POLL_MS);
  refresh().catch(() => {});
  stops.push(() => clearInterval(poller));

  // ----- what-if ----------------------------------------------------------------------------------------
  const whatif = node("section", { class: "whatif", "aria-labelledby": "whatif-title" });
  whatif.append(node("h4", { id: "whatif-title" }, "What if"));
  const whatifResult = node("p", { class: "whatif-result", "aria-live": "polite" });
  whatif.append(actForm("whatif-run", "Run on a fork", [
    ...labelled("whatif-scenario", "Scenario", { size: 14, required: "", placeholder: "fan off, setpoint 18" }),
    ...labelled("whatif-horizon", "Minutes ahead", { size: 4, value: "60", inputmode: "numeric" }),
  ], async () => {
    const scenario = section.querySelector("#whatif-scenario").value.trim();
    const horizon = Number(section.querySelector("#whatif-horizon").value) || 60;
    const reply = await call("Insight", { twinId: twin, kind: "whatif",
      paramsJson: JSON.stringify({ scenario, horizon_min: horizon }) });
    const doc = JSON.parse(reply.json);
    if (doc.refused) { plot.whatIf(null); return `refused: ${doc.refused}`; }
    const scale = timeScale();
    const t0 = doc.t0_s / scale * 1000;
    const series = {};
    for (const [name, values] of Object.entries(doc.trajectories)) {
      series[name] = values.map((v, i) => [t0 + doc.offsets_min[i] * 60e3 / scale, v,
        doc.lower[name] ? doc.lower[name][i] : null, doc.upper[name] ? doc.upper[name][i] : null]);
    }
    plot.whatIf({ label: doc.description || scenario, series });
    const crossings = (doc.crossings || []).filter((c) => c.eta_min !== null)
      .map((c) => `${c.field} reaches ${c.direction} limit ${c.threshold} in ${Math.round(c.eta_min / scale)} min`);
    whatifResult.textContent = `${doc.description || scenario} (${doc.kernel}): plotted as the dotted line` +
      `${crossings.length ? `; ${crossings.join("; ")}` : ""}.`;
    return "done";
  }), whatifResult);
  section.append(whatif);

  // ----- snapshots, rollback, audit (engineers) ---------------------------------------------------------
  if (may("engineer")) {
    const snaps = node("section", { class: "snapshots", "aria-labelledby": "snapshots-title" });
    snaps.append(node("h4", { id: "snapshots-title" }, "Snapshots"));
    const list = node("ul", { class: "snapshot-list" });
    snaps.append(actForm("act snapshot", "Take snapshot", labelled("snapshot-reason", "Why", { size: 16, required: "" }),
      async () => {
        const reason = section.querySelector("#snapshot-reason").value.trim();
        const info = await call("TakeSnapshot", { twinId: twin, reason });
        loadSnapshots();
        loadAudit();
        return `snapshot ${info.id} taken`;
      }), list);
    const done = node("p", { class: "outcome rollback-outcome", role: "status" });
    const dialog = confirmDialog((message) => { done.textContent = message; });
    snaps.append(done, dialog.element);
    const loadSnapshots = async () => {
      const reply = await call("ListSnapshots", { twinId: twin });
      list.textContent = "";
      for (const s of (reply.snapshots || []).slice(-8).reverse()) {
        const li = node("li", { "data-snapshot": s.id });
        li.append(`${time(s.createdMs)} ${s.id}: ${s.reason || "(no reason)"} by ${s.actor || "?"} `);
        const button = node("button", { type: "button", class: "act rollback",
          "aria-label": `Roll back to snapshot ${s.id}` }, "Roll back…");
        button.addEventListener("click", () => dialog.ask(s, async (reason) => {
          const reply2 = await call("Rollback", { twinId: twin, snapshotId: s.id, reason });
          loadSnapshots();
          loadAudit();
          return `rolled back: ${(reply2.changed || []).length} fields changed; safety snapshot ${reply2.safetySnapshot?.id || "—"}`;
        }));
        li.append(button);
        list.append(li);
      }
      if (!list.children.length) list.append(node("li", {}, "none"));
    };
    loadSnapshots().catch(() => {});
    section.append(snaps);

    const audit = node("section", { class: "audit", "aria-labelledby": "audit-title" });
    audit.append(node("h4", { id: "audit-title" }, "Audit trail"));
    const chain = node("p", { class: "chain", "aria-live": "polite" });
    const trail = node("table", { class: "audit-list" });
    trail.innerHTML = "<caption>Newest first: who changed what, and why</caption>" +
      '<thead><tr><th scope="col">Time</th><th scope="col">Who</th><th scope="col">Action</th>' +
      '<th scope="col">Why</th><th scope="col">Fields</th></tr></thead><tbody></tbody>';
    audit.append(chain, trail);
    const loadAudit = async () => {
      const reply = await call("ReadAudit", { twinId: twin, limit: 10 });
      chain.textContent = reply.chainOk ? `Hash chain verified (${reply.total} records).`
        : `Hash chain broken: ${(reply.chainProblems || []).join("; ")}`;
      chain.classList.toggle("bad", !reply.chainOk);
      const body = trail.tBodies[0];
      body.textContent = "";
      for (const r of [...(reply.records || [])].reverse()) {
        const tr = node("tr", { "data-action": r.action });
        for (const text of [time(r.tsMs), r.actor, r.action, r.reason, (r.changes || []).map((c) => c.name).join(", ")]) {
          tr.append(node("td", {}, text));
        }
        body.append(tr);
      }
    };
    loadAudit().catch(() => {});
    const auditPoller = setInterval(() => loadAudit().catch(() => {}), 5000);
    stops.push(() => clearInterval(auditPoller));
    section.append(audit);
  }
  return { stop() { for (const stop of stops) stop(); } };
}

// A modal confirmation (the native <dialog>: focus moves into it and Escape cancels) that asks why.
function confirmDialog(onDone) {
  const element = node("dialog", { class: "confirm", "aria-labelledby": "confirm-title" });
  const title = node("h4", { id: "confirm-title" });
  const form = node("form", { method: "dialog" });
  const [label, reason] = labelled("rollback-reason", "Why (kept in the audit trail)", { required: "", size: 24 });
  const outcome = node("p", { class: "outcome", role: "status" });
  const ok = node("button", { type: "submit", value: "confirm", class: "danger" }, "Roll back");
  const cancel = node("button", { type: "button" }, "Cancel");
  form.append(label, reason, ok, cancel, outcome);
  element.append(title, form);
  let pending = null;
  cancel.addEventListener("click", () => element.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    ok.disabled = true;
    try {
      const message = await pending(reason.value.trim());
      element.close();
      onDone(message);
    } catch (error) { outcome.textContent = `refused: ${error.message}`; }
    finally { ok.disabled = false; }
  });
  return {
    element,
    ask(snapshot, act) {
      title.textContent = `Roll back to snapshot ${snapshot.id} (${time(snapshot.createdMs)})? A safety snapshot is taken first.`;
      reason.value = "";
      outcome.textContent = "";
      pending = act;
      element.showModal();
      reason.focus();
    },
  };
}
