// The support console: plain ES module, no build step. Talks to /admin with the bearer token kept in
// sessionStorage (never in a URL, never logged). Views: #/sagas, #/sagas/<id>, #/bulk.
const KEY = "bookmarket.token";
const STATUSES = ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"];
const ICONS = {
  COMPLETED: "✔", SUCCEEDED: "✔", done: "✔", FAILED: "✖", refused: "✖", LOST: "?", RUNNING: "▶", WAITING: "⏸",
  PENDING: "…", COMPENSATING: "↺", COMPENSATED: "↩", SKIPPED: "⤼", BLOCKED: "⛔",
};
const POLL_MS = 5000;
const $ = (sel) => document.querySelector(sel);

const state = { me: null, page: 1, pageSize: 25, query: new URLSearchParams(), definitions: null, saga: null,
                plan: null, poll: null };

// --- DOM helpers -------------------------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(status) {
  const s = status || "—";
  return h("span", { class: `status s-${s.split(":")[0]}` }, `${ICONS[s.split(":")[0]] || "•"} ${s}`);
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function showMessage(text) {
  const m = $("#message");
  m.textContent = text || "";
  m.hidden = !text;
}

// --- the API -----------------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(KEY);
  const headers = { Accept: "application/json", Authorization: `Bearer ${token || ""}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET", headers, credentials: "omit", cache: "no-store",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    if (response.status === 401 && !options.login) logout("The token is not valid (401); log in again.");
    throw new ApiError(response.status, body);
  }
  return { body, headers: response.headers };
}

function problemText(err) {
  if (!(err instanceof ApiError)) return `Error: ${err.message}`;
  const extra = err.body && err.body.errors ? ` ${JSON.stringify(err.body.errors)}` : "";
  return `Refused (${err.status}): ${err.message}${extra}`;
}

// --- login -------------------------------------------------------------------------------------------------------
async function login(token) {
  sessionStorage.setItem(KEY, token);
  try {
    state.me = (await api("/admin/whoami", { login: true })).body;
  } catch (err) {
    sessionStorage.removeItem(KEY);
    state.me = null;
    if (err instanceof ApiError && err.status === 403) {
      showMessage("This token is refused (403): the console needs a support or viewer token.");
    } else if (err instanceof ApiError && err.status === 401) {
      showMessage("This token is not valid (401).");
    } else {
      showMessage(problemText(err));
    }
    return false;
  }
  showMessage("");
  return true;
}

function logout(text) {
  sessionStorage.removeItem(KEY);
  state.me = null;
  clearInterval(state.poll);
  state.poll = null;
  showMessage(text || "");
  route();
}

const canAct = () => state.me && state.me.role === "support";

// --- routing -----------------------------------------------------------------------------------------------------
const VIEWS = ["login-view", "list-view", "saga-view", "bulk-view"];

function show(view) {
  for (const v of VIEWS) document.getElementById(v).hidden = v !== view;
  const logged = Boolean(state.me);
  $("#nav").hidden = !logged;
  $("#who").hidden = !logged;
  if (logged) $("#who-name").textContent = `${state.me.name} (${state.me.role}${canAct() ? "" : ", read only"})`;
  $("#nav-sagas").toggleAttribute("aria-current", view === "list-view" || view === "saga-view");
  if (view === "list-view" || view === "saga-view") $("#nav-sagas").setAttribute("aria-current", "page");
  $("#nav-bulk").toggleAttribute("aria-current", view === "bulk-view");
  if (view === "bulk-view") $("#nav-bulk").setAttribute("aria-current", "page");
}

async function route() {
  if (!state.me && sessionStorage.getItem(KEY)) await login(sessionStorage.getItem(KEY));
  if (!state.me) {
    show("login-view");
    $("#token").focus();
    return;
  }
  if (!state.poll) {
    state.poll = setInterval(refreshCounts, POLL_MS);
    refreshCounts();
  }
  const hash = location.hash || "#/sagas";
  const one = hash.match(/^#\/sagas\/(\d+)$/);
  if (one) {
    show("saga-view");
    await loadSaga(Number(one[1]));
  } else if (hash === "#/bulk") {
    show("bulk-view");
    $("#bulk-viewer").hidden = canAct();
    $("#bulk-form").hidden = !canAct();
  } else {
    show("list-view");
    await loadList();
  }
}

// --- the list ----------------------------------------------------------------------------------------------------
function statusChecks(container, name) {
  for (const s of STATUSES) {
    container.append(h("label", {}, h("input", { type: "checkbox", name, value: s }), `${ICONS[s]} ${s}`));
  }
}

function filterQuery(form) {
  const data = new FormData(form);
  const q = new URLSearchParams();
  for (const s of data.getAll("status")) q.append("status", s);
  for (const k of ["order_id", "customer_id", "failing_step", "error", "kind"]) {
    const v = (data.get(k) || "").toString().trim();
    if (v) q.set(k, v);
  }
  for (const k of ["since", "until"]) {
    const v = (data.get(k) || "").toString();
    if (v) q.set(k, new Date(v).toISOString());
  }
  return q;
}

async function refreshCounts() {
  if (!state.me) return;
  try {
    const { body } = await api("/admin/sagas/counts");
    const box = $("#counts");
    box.replaceChildren(...STATUSES.map((s) => h("span", { class: "count", "data-status": s },
      badge(s), h("strong", {}, String(body.by_status[s] || 0)))));
    box.setAttribute("data-updated", new Date().toISOString());
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showMessage(problemText(err));
  }
}

async function loadList() {
  const q = new URLSearchParams(state.query);
  q.set("page", String(state.page));
  q.set("page_size", String(state.pageSize));
  const tbody = $("#saga-table tbody");
  try {
    const { body, headers } = await api(`/admin/sagas?${q}`);
    const paging = JSON.parse(headers.get("X-Pagination") || "{}");
    const total = paging.total ?? body.length;
    $("#list-summary").textContent = `${total} saga${total === 1 ? "" : "s"} found`;
    tbody.replaceChildren(...body.map((s) => h("tr", { "data-saga": s.id },
      h("td", { "data-label": "Saga" }, h("a", { href: `#/sagas/${s.id}` }, `#${s.id}`)),
      h("td", { "data-label": "Status" }, badge(s.status)),
      h("td", { "data-label": "Kind" }, s.kind),
      h("td", { "data-label": "Order" }, String(s.order_id)),
      h("td", { "data-label": "Customer" }, String(s.customer_id)),
      h("td", { "data-label": "Failing step" }, s.failing_step || "—"),
      h("td", { "data-label": "Error", class: "error" }, s.error || s.reason || "—"),
      h("td", { "data-label": "Created" }, when(s.created_at)))));
    const pages = paging.total_pages || 1;
    $("#page-label").textContent = `Page ${state.page} of ${pages}`;
    $("#prev-page").disabled = state.page <= 1;
    $("#next-page").disabled = state.page >= pages;
  } catch (err) {
    showMessage(problemText(err));
  }
}

// --- one saga ----------------------------------------------------------------------------------------------------
async function definitions() {
  if (!state.definitions) state.definitions = (await api("/admin/definitions")).body;
  return state.definitions;
}

function here(saga) {
  // The current position: the failing step, else the step running or waiting, else none (finished).
  const failed = saga.steps.filter((s) => s.status === "FAILED").pop();
  if (failed) return failed.name;
  const open = saga.steps.find((s) => ["RUNNING", "WAITING", "PENDING"].includes(s.status));
  return open ? open.name : null;
}

function diagram(saga, defs) {
  const def = defs.find((d) => d.kind === saga.kind);
  if (!def) return h("p", {}, "No definition for this kind.");
  const byName = Object.fromEntries(saga.steps.map((s) => [s.name, s]));
  const current = here(saga);
  const box = (name, comp) => {
    const step = byName[name];
    const at = name === current;
    return h("div", { class: `box${comp ? " comp" : ""}${at ? " here" : ""}`, "data-step": name,
                      "aria-current": at ? "step" : null },
      h("span", { class: "name" }, comp ? `↩ ${name}` : name),
      h("span", { class: "mark" }, step ? badge(step.status) : "not run"),
      at ? h("span", { class: "mark" }, "◆ current position") : null);
  };
  const items = [];
  def.steps.forEach((s, i) => {
    if (i) items.push(h("span", { class: "arrow", "aria-hidden": "true" }, "→"));
    items.push(h("div", { class: "phase" }, box(s.name, false),
      s.compensation ? box(s.compensation, true) : h("span", { class: "mark hint" }, "no undo")));
  });
  const extra = def.compensations.filter((c) => !def.steps.some((s) => s.compensation === c));
  if (extra.length) {
    items.push(h("span", { class: "arrow", "aria-hidden": "true" }, "⋯"));
    items.push(h("div", { class: "phase" }, ...extra.map((c) => box(c, true))));
  }
  return h("div", { class: "diagram", role: "list", "aria-label": `The ${def.kind} saga's steps` },
    ...items.map((el) => { if (el.classList.contains("phase")) el.setAttribute("role", "listitem"); return el; }));
}

function attemptsTable(step) {
  const rows = step.attempt_history || [];
  if (!rows.length) return h("p", { class: "hint" }, step.local ? "Local step (no provider call)." : "No attempts.");
  return h("div", { class: "table-wrap" }, h("table", { class: "attempts" },
    h("thead", {}, h("tr", {}, ...["#", "Outcome", "Error", "Started", "Finished", "Flower"].map(
      (t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...rows.map((a) => h("tr", {},
      h("td", {}, String(a.attempt)),
      h("td", {}, badge(a.outcome), a.outcome_unknown ? " (outcome unknown)" : ""),
      h("td", { class: "error" }, a.error || "—"),
      h("td", {}, when(a.started_at)),
      h("td", {}, when(a.finished_at)),
      h("td", {}, a.flower_url ? h("a", { href: a.flower_url, rel: "noopener noreferrer", target: "_blank" },
        "task in Flower") : "—"))))));
}

async function loadSaga(id) {
  $("#outcome").hidden = $("#outcome").dataset.saga !== String(id);
  try {
    const [{ body: saga }, defs] = await Promise.all([api(`/admin/sagas/${id}`), definitions()]);
    state.saga = saga;
    $("#saga-title").replaceChildren(`Saga #${saga.id} `, badge(saga.state));
    const facts = [["Kind", saga.kind], ["Status", saga.status], ["Order", saga.order_id],
                   ["Customer", saga.customer_id], ["Reason", saga.reason || "—"], ["Created", when(saga.created_at)],
                   ["Finished", when(saga.finished_at)], ["Recoveries", saga.recoveries]];
    $("#saga-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
    const actions = $("#saga-actions");
    actions.replaceChildren();
    if (canAct()) {
      for (const a of saga.actions) {
        actions.append(h("button", { type: "button", class: "danger", "data-action": a }, a));
      }
      if (!saga.actions.length) actions.append(h("p", { class: "hint" }, "Its state allows no action now."));
    }
    $("#diagram").replaceWith(Object.assign(diagram(saga, defs), { id: "diagram" }));
    $("#timeline").replaceChildren(...saga.steps.map((s) => h("li", { "data-step": s.name },
      h("h4", {}, `${s.position + 1}. ${s.name}`, badge(s.status),
        h("span", { class: "hint" }, `${s.attempts}/${s.max_attempts} attempts`)),
      s.error ? h("p", { class: "error" }, `Error: ${s.error}`) : null,
      attemptsTable(s))));
    $("#state-changes").replaceChildren(...saga.state_changes.map((c) => h("li", {},
      `${when(c.at)} `, badge(c.status), ` by ${c.by}`)));
    $("#audit-table tbody").replaceChildren(...(saga.audit.length ? saga.audit.map((a) => h("tr", {},
      h("td", {}, when(a.at)), h("td", {}, `${a.actor} (${a.role})`), h("td", {}, a.action),
      h("td", {}, a.step || "—"), h("td", {}, a.reason),
      h("td", {}, `${a.state_before || "—"} → ${a.state_after || "—"}`),
      h("td", {}, badge(a.outcome), a.detail ? ` ${a.detail}` : ""))) :
      [h("tr", {}, h("td", { colspan: "7" }, "No support action yet."))]));
  } catch (err) {
    showMessage(problemText(err));
  }
}

// --- the confirm dialog ------------------------------------------------------------------------------------------
function confirmAction(text, steps) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-reason").value = "";
  $("#confirm-step-label").hidden = !steps;
  $("#confirm-step").required = Boolean(steps);
  $("#confirm-step").replaceChildren(...(steps || []).map((s) => h("option", { value: s }, s)));
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      resolve(dialog.returnValue === "ok" ? { reason: $("#confirm-reason").value.trim(),
                                               step: steps ? $("#confirm-step").value : undefined } : null);
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", done);
    dialog.showModal();
    $("#confirm-reason").focus();
  });
}

async function act(action) {
  const saga = state.saga;
  const steps = action === "resume" ? (await definitions()).find((d) => d.kind === saga.kind).steps
    .map((s) => s.name) : null;
  const answer = await confirmAction(`${action} saga #${saga.id} (now ${saga.state})?`, steps);
  const out = $("#outcome");
  out.dataset.saga = String(saga.id);
  if (!answer) return;
  const body = { reason: answer.reason };
  if (answer.step) body.step = answer.step;
  try {
    const { body: r } = await api(`/admin/sagas/${saga.id}/${action}`, { method: "POST", body });
    out.className = "outcome";
    out.textContent = `✔ ${action} done: ${r.state_before} → ${r.state_after}` +
      (r.started_saga_id ? ` (started saga #${r.started_saga_id})` : "") + ` (audit #${r.audit_id})`;
  } catch (err) {
    out.className = "outcome bad";
    out.textContent = `✖ ${problemText(err)}`;
  }
  out.hidden = false;
  await loadSaga(saga.id);
  out.hidden = false;
}

// --- bulk --------------------------------------------------------------------------------------------------------
async function dryRun(form) {
  const data = new FormData(form);
  const q = filterQuery(form);
  const filter = {};
  for (const [k, v] of q) {
    if (k === "status") (filter.status ||= []).push(v);
    else filter[k] = v;
  }
  const request = { action: data.get("action"), reason: data.get("reason").toString().trim(), filter };
  const step = (data.get("step") || "").toString().trim();
  if (request.action === "resume" && step) request.step = step;
  const planBox = $("#bulk-plan");
  try {
    const { body: plan } = await api("/admin/bulk", { method: "POST", body: request });
    state.plan = plan;
    planBox.hidden = false;
    $("#bulk-count").textContent = `Dry run: ${plan.total} saga${plan.total === 1 ? "" : "s"} would get ` +
      `${plan.action}${plan.total > plan.sagas.length ? ` (the first ${plan.sagas.length} below)` : ""}.`;
    $("#bulk-count").dataset.total = String(plan.total);
    $("#bulk-sagas").replaceChildren(...plan.sagas.slice(0, 30).map((s) => h("li", {},
      h("a", { href: `#/sagas/${s.saga_id}` }, `#${s.saga_id}`), " ", badge(s.state))));
    $("#bulk-progress").max = Math.max(plan.total, 1);
    $("#bulk-progress").value = 0;
    $("#bulk-status").textContent = "";
    $("#bulk-run").disabled = plan.total === 0;
  } catch (err) {
    planBox.hidden = true;
    showMessage(problemText(err));
  }
}

async function runPlan() {
  const plan = state.plan;
  if (!plan) return;
  const ok = await confirmAction(`Run ${plan.action} on ${plan.total} sagas? Reason given: "${plan.reason}". ` +
    "Type it again (or a note) to confirm.", null);
  if (!ok) return;
  $("#bulk-run").disabled = true;
  const status = $("#bulk-status");
  try {
    let progress = { finished: false };
    while (!progress.finished) {
      progress = (await api(`/admin/bulk/${encodeURIComponent(plan.token)}/run`,
        { method: "POST", body: { batch_size: 20 } })).body;
      $("#bulk-progress").value = progress.done;
      status.textContent = `${progress.done} of ${progress.total} done: ${progress.touched} acted on, ` +
        `${progress.skipped} skipped (no longer in the state the dry run saw).`;
    }
    status.textContent = `✔ Finished. ${status.textContent}`;
  } catch (err) {
    status.textContent = `✖ ${problemText(err)}`;
  }
}

// --- wiring ------------------------------------------------------------------------------------------------------
function wire() {
  statusChecks($("#filter-statuses"), "status");
  statusChecks($("#bulk-statuses"), "status");
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("#token");
    const token = input.value.trim();
    input.value = "";
    if (await login(token)) {
      if (!location.hash) location.hash = "#/sagas";
      await route();
    }
  });
  $("#logout").addEventListener("click", () => logout("Logged out."));
  $("#filter-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.query = filterQuery(e.target);
    state.page = 1;
    loadList();
  });
  $("#filter-form").addEventListener("reset", () => {
    state.query = new URLSearchParams();
    state.page = 1;
    setTimeout(loadList);
  });
  $("#prev-page").addEventListener("click", () => { state.page -= 1; loadList(); });
  $("#next-page").addEventListener("click", () => { state.page += 1; loadList(); });
  $("#saga-actions").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (button) act(button.dataset.action);
  });
  $("#refresh-saga").addEventListener("click", () => state.saga && loadSaga(state.saga.id));
  $("#confirm-cancel").addEventListener("click", () => $("#confirm").close(""));
  $("#bulk-action").addEventListener("change", (e) => { $("#bulk-step-label").hidden = e.target.value !== "resume"; });
  $("#bulk-form").addEventListener("submit", (e) => { e.preventDefault(); dryRun(e.target); });
  $("#bulk-run").addEventListener("click", runPlan);
  window.addEventListener("hashchange", () => { showMessage(""); route(); });
  route();
}

wire();
