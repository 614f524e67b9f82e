// The web UI: plain ES modules over the gateway's own API, same origin, with the key (when
// the gateway has keys) from localStorage as a Bearer token. No data is shown until an API
// call with that key has answered.
import { render } from "/ui/md.js";

const KEY = "appliance.key";
const $ = (id) => document.getElementById(id);
const state = { workspaces: [], models: [], abort: null };

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = localStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    message = body?.error?.message || body?.message || message;
  } catch { /* not JSON */ }
  if (resp.status === 401) showGate("The gateway refused the key: " + message);
  return new HttpError(resp.status, message);
}

async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await errorOf(resp);
  return resp.status === 204 ? null : resp.json();
}

function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  row.append(td);
  return td;
}

const ms = (v) => (v == null ? "" : v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(2)} s`);
const score = (v) => (typeof v === "number" ? v.toFixed(4) : "");

// ---- key gate ----

function showGate(message) {
  $("main").hidden = true;
  $("nav").hidden = true;
  $("forget").hidden = !localStorage.getItem(KEY);
  $("gate").hidden = false;
  $("gate-error").textContent = message || "";
  $("gate-key").focus();
}

async function start() {
  try {
    await loadModels();
  } catch (err) {
    if (err.status === 401) return;  // the gate is up
    $("ask-meta").textContent = `models: ${err.message}`;
  }
  $("gate").hidden = true;
  $("main").hidden = false;
  $("nav").hidden = false;
  $("forget").hidden = !localStorage.getItem(KEY);
  await loadWorkspaces().catch((err) => { $("kn-error").textContent = err.message; });
  route();
}

$("gate-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(KEY, $("gate-key").value.trim());
  $("gate-key").value = "";
  start();
});

$("forget").addEventListener("click", () => {
  localStorage.removeItem(KEY);
  location.hash = "";
  location.reload();
});

// ---- pages ----

function route() {
  const page = (location.hash || "#ask").slice(1);
  for (const section of document.querySelectorAll("main > section[data-page]")) {
    section.hidden = section.dataset.page !== page;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (page === "knowledge") loadDocuments();
  if (page === "activity") loadActivity();
  if (page === "status") loadStatus();
}
window.addEventListener("hashchange", () => { if (!$("main").hidden) route(); });

// ---- models and workspaces ----

async function loadModels() {
  const body = await api("/v1/models");
  state.models = body.data || [];
  const select = $("ask-model");
  const previous = select.value;
  clear(select);
  for (const m of state.models) {
    const option = new Option(m.router ? `${m.id} (router)` : m.id, m.id);
    select.append(option);
  }
  if (previous) select.value = previous;
}

function fillWorkspaces(select, withNone) {
  const previous = select.value;
  clear(select);
  if (withNone) select.append(new Option("none (direct chat)", ""));
  for (const w of state.workspaces) select.append(new Option(`${w.workspace} (${w.documents})`, w.workspace));
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

async function loadWorkspaces() {
  try {
    state.workspaces = (await api("/v1/knowledge")).data || [];
  } finally {
    fillWorkspaces($("ask-workspace"), true);
    fillWorkspaces($("kn-workspace"), false);
  }
  if (!$("ask-workspace").value && state.workspaces.length) $("ask-workspace").value = state.workspaces[0].workspace;
}

// ---- Ask ----

function citeFor(passages) {
  return (n) => {
    if (!passages.some((p) => p.number === n)) return null;
    const a = document.createElement("a");
    a.href = `#source-${n}`;
    a.className = "cite";
    a.textContent = `[${n}]`;
    a.setAttribute("aria-label", `source ${n}`);
    a.addEventListener("click", (ev) => {
      ev.preventDefault();
      const target = $(`source-${n}`);
      target?.scrollIntoView({ block: "nearest" });
      target?.focus();
    });
    return a;
  };
}

function renderSources(list, passages) {
  clear(list);
  for (const p of passages) {
    const li = document.createElement("li");
    li.id = list.id === "sources" ? `source-${p.number}` : "";
    li.tabIndex = -1;
    li.value = p.number;
    const head = document.createElement("div");
    head.className = "source-head";
    const doc = document.createElement("strong");
    doc.textContent = p.document_id;
    const meta = document.createElement("span");
    meta.className = "meta";
    const scores = p.scores || (p.score != null ? { score: p.score } : {});
    meta.textContent = ` #${p.chunk_index} · ` + Object.entries(scores).map(([k, v]) => `${k} ${score(v)}`).join(" · ");
    head.append(doc, meta);
    const text = document.createElement("p");
    text.className = "source-text";
    text.textContent = p.content ?? "(chunk no longer stored)";
    li.append(head, text);
    list.append(li);
  }
}

// Server-sent events from a fetch body: yields {event, data} per event.
async function* sse(resp, signal) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const raw = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of raw.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

async function ask(ev) {
  ev.preventDefault();
  const question = $("ask-question").value.trim();
  if (!question || state.abort) return;
  const workspace = $("ask-workspace").value;
  const answer = $("answer");
  const meta = $("ask-meta");
  clear(answer);
  clear($("sources"));
  $("sources-empty").hidden = false;
  answer.setAttribute("aria-busy", "true");
  const controller = new AbortController();
  state.abort = controller;
  $("ask-button").disabled = true;
  $("ask-stop").hidden = false;
  meta.textContent = "asking…";
  const started = performance.now();
  let text = "";
  let passages = [];
  let first = null;
  let scheduled = false;
  const paint = () => {
    scheduled = false;
    clear(answer);
    answer.append(render(text, citeFor(passages)));
  };
  try {
    const h = headers({ "Content-Type": "application/json" });
    if (workspace) {
      h["x-workspace"] = workspace;
      h["x-appliance-passages"] = "true";
    }
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: h, signal: controller.signal,
      body: JSON.stringify({ model: $("ask-model").value, stream: true,
                             messages: [{ role: "user", content: question }] }),
    });
    if (!resp.ok) throw await errorOf(resp);
    const route = resp.headers.get("x-appliance-route") || "direct";
    const warning = resp.headers.get("x-appliance-warning");
    for await (const { event, data } of sse(resp, controller.signal)) {
      if (event === "appliance.passages") {
        passages = JSON.parse(data).passages || [];
        renderSources($("sources"), passages);
        $("sources-empty").hidden = passages.length > 0;
        continue;
      }
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) {
        if (first === null) {
          first = performance.now() - started;
          answer.dataset.firstTokenMs = first.toFixed(1);
        }
        text += delta;
        if (!scheduled) {
          scheduled = true;
          requestAnimationFrame(paint);
        }
      }
    }
    paint();
    const total = performance.now() - started;
    meta.textContent = `${route} · ${resp.headers.get("x-appliance-backend") || ""} · first token ${ms(first)} · ${ms(total)}`
      + (warning ? ` · ${warning}` : "");
  } catch (err) {
    if (err.name === "AbortError") {
      paint();
      meta.textContent = "stopped";
    } else {
      meta.textContent = "";
      const p = document.createElement("p");
      p.className = "error";
      p.setAttribute("role", "alert");
      p.textContent = err.message;
      answer.append(p);
    }
  } finally {
    answer.setAttribute("aria-busy", "false");
    state.abort = null;
    $("ask-button").disabled = false;
    $("ask-stop").hidden = true;
  }
}

$("ask-form").addEventListener("submit", ask);
$("ask-question").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("ask-form").requestSubmit();
});
$("ask-stop").addEventListener("click", () => state.abort?.abort());

// ---- Knowledge ----

const currentWorkspace = () => $("kn-workspace").value;

async function loadDocuments() {
  const ws = currentWorkspace();
  const body = $("kn-docs");
  $("kn-error").textContent = "";
  if (!ws) {
    clear(body);
    return;
  }
  try {
    const docs = (await api(`/v1/knowledge/${encodeURIComponent(ws)}/documents?limit=1000`)).data;
    clear(body);
    for (const d of docs) {
      const row = document.createElement("tr");
      cell(row, d.id);
      cell(row, String(d.chunks), "num");
      cell(row, String(d.chars), "num");
      cell(row, (d.updated_at || "").replace("T", " ").slice(0, 19));
      const del = document.createElement("button");
      del.type = "button";
      del.className = "quiet";
      del.textContent = "Delete";
      del.setAttribute("aria-label", `Delete ${d.id}`);
      del.addEventListener("click", () => deleteDocument(ws, d.id));
      row.append(document.createElement("td"));
      row.lastChild.append(del);
      body.append(row);
    }
  } catch (err) {
    $("kn-error").textContent = err.message;
  }
}

async function deleteDocument(ws, id) {
  if (!confirm(`Delete ${id} from ${ws}?`)) return;
  try {
    await api(`/v1/knowledge/${encodeURIComponent(ws)}/documents/${encodeURIComponent(id)}`, { method: "DELETE" });
    await refreshKnowledge();
  } catch (err) {
    $("kn-error").textContent = err.message;
  }
}

async function refreshKnowledge() {
  await loadWorkspaces().catch(() => {});
  await loadDocuments();
}

$("kn-workspace").addEventListener("change", loadDocuments);
$("kn-new").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("kn-new-name").value.trim();
  if (!name) return;
  if (!state.workspaces.some((w) => w.workspace === name)) state.workspaces.push({ workspace: name, documents: 0 });
  fillWorkspaces($("kn-workspace"), false);
  fillWorkspaces($("ask-workspace"), true);
  $("kn-workspace").value = name;
  $("kn-new-name").value = "";
  loadDocuments();
});

const TEXT_TYPES = /\.(md|markdown|txt|text|rst)$/i;
const HTML_TYPES = /\.(html|htm|xhtml)$/i;

function htmlText(source) {
  // DOMParser never runs scripts; block elements become paragraph breaks.
  const doc = new DOMParser().parseFromString(source, "text/html");
  doc.querySelectorAll("script,style,noscript,template").forEach((n) => n.remove());
  doc.querySelectorAll("p,div,section,article,li,h1,h2,h3,h4,h5,h6,br,tr,pre,blockquote").forEach((n) => n.append("\n\n"));
  return (doc.body?.textContent || "").replace(/\n{3,}/g, "\n\n").trim();
}

// Every file under a dropped item, with its path relative to what was dropped.
async function entries(item, prefix = "") {
  if (item.isFile) {
    const file = await new Promise((ok, fail) => item.file(ok, fail));
    return [{ file, path: prefix + file.name }];
  }
  const reader = item.createReader();
  const out = [];
  for (;;) {
    const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
    if (!batch.length) break;
    for (const child of batch) out.push(...await entries(child, `${prefix}${item.name}/`));
  }
  return out;
}

async function ingest(files) {
  const ws = currentWorkspace();
  if (!ws) {
    $("kn-error").textContent = "Pick or add a workspace first.";
    return;
  }
  const wanted = files.filter(({ path }) => TEXT_TYPES.test(path) || HTML_TYPES.test(path));
  const skipped = files.length - wanted.length;
  $("ingest").hidden = false;
  const bar = $("ingest-progress");
  const status = $("ingest-status");
  bar.max = Math.max(wanted.length, 1);
  bar.value = 0;
  const counts = { created: 0, updated: 0, unchanged: 0, failed: 0 };
  for (const [i, { file, path }] of wanted.entries()) {
    status.textContent = `${i} of ${wanted.length}: ${path}…`;
    try {
      const raw = await file.text();
      const text = HTML_TYPES.test(path) ? htmlText(raw) : raw;
      const result = await api(`/v1/knowledge/${encodeURIComponent(ws)}/documents`, {
        method: "POST", body: { id: path, text, metadata: { source: "ui", filename: file.name } } });
      counts[result.data[0].status] += 1;
    } catch (err) {
      counts.failed += 1;
      $("kn-error").textContent = `${path}: ${err.message}`;
    }
    bar.value = i + 1;
  }
  status.textContent = `ingested ${wanted.length} files into '${ws}': ${counts.created} new, ${counts.updated} changed, `
    + `${counts.unchanged} unchanged` + (counts.failed ? `, ${counts.failed} failed` : "")
    + (skipped ? `, ${skipped} skipped (not .md .txt .rst .html)` : "");
  await refreshKnowledge();
}

const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const items = [...ev.dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  const files = items.length
    ? (await Promise.all(items.map((item) => entries(item)))).flat()
    : [...ev.dataTransfer.files].map((file) => ({ file, path: file.name }));
  ingest(files);
});
drop.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" || ev.key === " ") {
    ev.preventDefault();
    $("pick-files").click();
  }
});
$("pick-files").addEventListener("change", (ev) => {
  ingest([...ev.target.files].map((file) => ({ file, path: file.name })));
  ev.target.value = "";
});
$("pick-folder").addEventListener("change", (ev) => {
  ingest([...ev.target.files].map((file) => ({ file, path: file.webkitRelativePath.split("/").slice(1).join("/") || file.name })));
  ev.target.value = "";
});

$("kn-search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ws = currentWorkspace();
  const list = $("kn-results");
  clear(list);
  $("kn-error").textContent = "";
  try {
    const body = await api(`/v1/knowledge/${encodeURIComponent(ws)}/search`, {
      method: "POST", body: { query: $("kn-query").value, top_k: 10, mode: "hybrid", rerank: $("kn-rerank").checked } });
    renderSources(list, body.data.map((h, i) => ({ ...h, number: i + 1 })));
    if (!body.data.length) list.append(Object.assign(document.createElement("li"), { textContent: "nothing found" }));
  } catch (err) {
    $("kn-error").textContent = err.message;
  }
});

// ---- Activity ----

async function loadActivity() {
  const rows = $("act-rows");
  $("act-error").textContent = "";
  try {
    const body = await api("/ui/api/activity?limit=100");
    clear(rows);
    $("act-meta").textContent = body.data.length ? "" : "no requests recorded yet";
    for (const r of body.data) {
      const row = document.createElement("tr");
      const time = document.createElement("td");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "link";
      open.textContent = r.ts.replace("T", " ").slice(0, 19);
      open.setAttribute("aria-label", `Open request at ${open.textContent}`);
      open.addEventListener("click", () => openActivity(r.event_id));
      time.append(open);
      row.append(time);
      cell(row, r.model);
      cell(row, r.backend);
      cell(row, r.route + (r.prompt_name ? ` (${r.prompt_name}@${r.prompt_version})` : ""));
      cell(row, r.prompt_tokens == null ? "" : `${r.prompt_tokens}/${r.completion_tokens}`, "num");
      cell(row, ms(r.latency_ms), "num");
      cell(row, ms(r.ttft_ms), "num");
      cell(row, r.cost_usd == null ? "" : `$${r.cost_usd.toFixed(6)}`, "num");
      cell(row, r.question, "clip");
      rows.append(row);
    }
  } catch (err) {
    clear(rows);
    $("act-error").textContent = err.status === 503 ? `Activity is unavailable: ${err.message}` : err.message;
  }
}

async function openActivity(eventId) {
  const panel = $("act-detail");
  try {
    const r = await api(`/ui/api/activity/${encodeURIComponent(eventId)}`);
    const dl = $("act-detail-meta");
    clear(dl);
    const pairs = [["time", r.ts], ["model", r.model], ["backend", r.backend], ["route", r.route],
      ["workspace", r.workspace], ["prompt", r.prompt_name ? `${r.prompt_name}@${r.prompt_version}` : ""],
      ["correlation id", r.correlation_id]];
    for (const [k, v] of pairs) {
      if (!v) continue;
      dl.append(Object.assign(document.createElement("dt"), { textContent: k }),
                Object.assign(document.createElement("dd"), { textContent: v }));
    }
    $("act-detail-prompt").textContent = r.prompt;
    const answer = $("act-detail-answer");
    clear(answer);
    answer.append(render(r.response, null));
    renderSources($("act-detail-sources"), r.sources);
    panel.hidden = false;
    panel.scrollIntoView({ block: "start" });
    $("act-detail-title").focus();
  } catch (err) {
    $("act-error").textContent = err.message;
  }
}
$("act-detail-title").tabIndex = -1;
$("act-refresh").addEventListener("click", loadActivity);

// ---- Status ----

function detail(value) {
  if (value == null) return "";
  return Object.entries(value).filter(([k]) => k !== "ok").map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
}

async function loadStatus() {
  $("st-meta").textContent = "checking…";
  let body;
  try {
    const resp = await fetch("/readyz", { headers: headers() });
    body = await resp.json();
  } catch (err) {
    $("st-meta").textContent = `readyz: ${err.message}`;
    return;
  }
  $("st-meta").textContent = `${body.status} · ${new Date().toLocaleTimeString()}`;
  const backends = $("st-backends");
  clear(backends);
  for (const [name, b] of Object.entries(body.backends || {})) {
    const row = document.createElement("tr");
    cell(row, name);
    cell(row, b.ok ? "yes" : "no", b.ok ? "ok" : "bad");
    cell(row, b.models == null ? "" : String(b.models), "num");
    cell(row, b.breaker || "");
    cell(row, b.error || "");
    backends.append(row);
  }
  const deps = $("st-deps");
  clear(deps);
  for (const [name, d] of Object.entries(body.dependencies || {})) {
    const row = document.createElement("tr");
    cell(row, name);
    cell(row, d.ok ? "yes" : "no", d.ok ? "ok" : "bad");
    cell(row, detail(d));
    deps.append(row);
  }
  const spool = $("st-spool");
  clear(spool);
  const nats = body.dependencies?.nats;
  const facts = nats ? Object.entries(nats) : [["events", "off (no APPLIANCE_NATS_URL)"]];
  for (const [k, v] of facts) {
    spool.append(Object.assign(document.createElement("dt"), { textContent: k }),
                 Object.assign(document.createElement("dd"), { textContent: typeof v === "object" ? JSON.stringify(v) : String(v) }));
  }
}
$("st-refresh").addEventListener("click", loadStatus);

start();
