// amem web page: search, a note with its links and history, and the memory graph. Plain JS, no build.
// Everything comes from the REST API (/v1/...); note text is always inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { auth: false, graph: null, data: null, byId: new Map(), hits: new Set(), selected: null, drawn: 0 };
const TAG_COLOURS = ["#3b6fd8", "#2f9e6a", "#d8743b", "#9b4fd8", "#c23b6f", "#3ba7c2", "#8a8f2f", "#6f5a3b"];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "on") for (const [evt, fn] of Object.entries(v)) node.addEventListener(evt, fn);
    else if (k === "data") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function scopeParams() {
  const params = new URLSearchParams();
  for (const [field, name] of [["user", "user_id"], ["agent", "agent_id"], ["run", "run_id"]]) {
    const value = $(field).value.trim();
    if (value && !(field === "user" && state.auth)) params.set(name, value);
  }
  return params;
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = sessionStorage.getItem("amem-key");
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const sep = path.includes("?") ? "&" : "?";
  const scope = scopeParams().toString();
  const response = await fetch(scope ? `${path}${sep}${scope}` : path, { ...options, headers });
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function fmtTime(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, " UTC") : "";
}

function tagColour(tag) {
  let h = 0;
  for (const c of tag || "") h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return tag ? TAG_COLOURS[h % TAG_COLOURS.length] : "#8c93a6";
}

// -- graph ------------------------------------------------------------------------------------
function endpoint(end) {
  return typeof end === "object" ? end : state.byId.get(end);  // an id until the layout resolves it
}

function visible(node) {
  if (!node) return false;
  const tag = $("tag").value;
  const after = $("after").value;
  const before = $("before").value;
  if (tag && !node.tags.includes(tag)) return false;
  const day = node.event_time.slice(0, 10);
  if (after && day < after) return false;
  if (before && day > before) return false;
  return true;
}

function ensureGraph() {
  if (state.graph) return state.graph;
  const box = $("graph");
  state.graph = new ForceGraph(box)
    .width(box.clientWidth)
    .height(box.clientHeight)
    .nodeId("id")
    .nodeLabel((n) => `<b>${escapeHtml(n.label)}</b><br>${escapeHtml(n.tags.join(", "))}`)
    .nodeVisibility(visible)
    .linkVisibility((l) => visible(endpoint(l.source)) && visible(endpoint(l.target)))
    .linkColor(() => "rgba(60,70,90,0.25)")
    .linkDirectionalArrowLength(4)
    .linkDirectionalArrowRelPos(0.9)
    .linkLabel((l) => escapeHtml(l.reason))
    .nodeCanvasObject((n, ctx, scale) => {
      const marked = state.hits.has(n.id) || state.selected === n.id;
      const r = (marked ? 7 : 4) / scale;  // constant on screen, whatever the zoom
      ctx.beginPath();
      ctx.arc(n.x, n.y, r, 0, 2 * Math.PI);
      ctx.fillStyle = n.state === "enriched" ? tagColour(n.tags[0]) : "#e0a030";
      ctx.fill();
      if (marked) {
        ctx.lineWidth = 2 / scale;
        ctx.strokeStyle = state.selected === n.id ? "#111" : "#d8283b";
        ctx.stroke();
      }
      if (scale > 1.5 || marked) {  // labels once zoomed in far enough to read them
        ctx.font = `${11 / scale}px system-ui, sans-serif`;
        ctx.fillStyle = "#1d2330";
        ctx.fillText(n.label.length > 40 ? `${n.label.slice(0, 39)}…` : n.label, n.x + r + 2 / scale, n.y + 4 / scale);
      }
      state.drawn += 1;
    })
    .nodePointerAreaPaint((n, colour, ctx, scale) => {
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.arc(n.x, n.y, 8 / scale, 0, 2 * Math.PI);
      ctx.fill();
    })
    .onRenderFramePre(() => { state.drawn = 0; })
    .onRenderFramePost(() => { document.body.dataset.drawnNodes = String(state.drawn); })
    .onNodeClick((n) => openNote(n.id))
    .warmupTicks(0)
    .cooldownTicks(150)
    .cooldownTime(6000)
    .onEngineStop(() => {
      document.body.dataset.graphReady = "yes";
      if (!state.fitted) { state.graph.zoomToFit(400, 30); state.fitted = true; }
    });
  state.graph.d3Force("charge").strength(-12);
  state.graph.d3Force("link").distance(18);
  window.addEventListener("resize", fitCanvas);
  return state.graph;
}

function fitCanvas() {
  const box = $("graph");
  if (state.graph) state.graph.width(box.clientWidth).height(box.clientHeight);
}

async function loadGraph() {
  status("loading…");
  document.body.dataset.graphReady = "no";
  const g = await api(`/v1/graph?limit=${$("limit").value}`);
  state.data = g;
  state.byId = new Map(g.nodes.map((n) => [n.id, n]));
  const tags = [...new Set(g.nodes.flatMap((n) => n.tags))].sort();
  const tagSelect = $("tag");
  const keep = tagSelect.value;
  tagSelect.replaceChildren(el("option", { value: "" }, "all tags"), ...tags.map((t) => el("option", { value: t }, t)));
  tagSelect.value = tags.includes(keep) ? keep : "";
  state.fitted = false;
  ensureGraph().graphData({
    nodes: g.nodes.map((n) => ({ ...n })),
    links: g.edges.map((e) => ({ source: e.source, target: e.target, reason: e.reason })),
  });
  document.body.dataset.graphNodes = String(g.nodes.length);
  const more = g.truncated ? ` (newest of ${g.total_notes.toLocaleString()})` : "";
  status(`${g.nodes.length.toLocaleString()} notes${more}, ${g.edges.length.toLocaleString()} links`);
  applyFilters();
}

function applyFilters() {
  if (!state.graph || !state.data) return;
  state.graph.nodeVisibility(state.graph.nodeVisibility()).linkVisibility(state.graph.linkVisibility());
  const shown = state.data.nodes.filter(visible).length;
  $("filter-count").textContent = `${shown.toLocaleString()} of ${state.data.nodes.length.toLocaleString()} shown`;
}

// -- search -----------------------------------------------------------------------------------
async function search(query) {
  const list = $("results");
  list.replaceChildren(el("li", {}, "searching…"));
  try {
    const result = await api("/v1/search", { method: "POST", body: JSON.stringify({ query, k: 8 }) });
    state.hits = new Set(result.hits.map((h) => h.note.id));
    list.replaceChildren(
      ...result.hits.map((hit, i) =>
        el(
          "li",
          { class: hit.why.via_link_from ? "linked" : "", data: { id: hit.note.id }, on: { click: () => openNote(hit.note.id) } },
          el("span", { class: "score" }, hit.score.toFixed(3)),
          hit.note.content,
          el("div", { class: "why" }, `why: ${result.explanations[i]}`),
        ),
      ),
    );
    if (!result.hits.length) list.replaceChildren(el("li", {}, "no notes found"));
    document.body.dataset.searchDone = "yes";
    if (state.graph) state.graph.nodeColor(state.graph.nodeColor());
  } catch (err) {
    list.replaceChildren(el("li", { class: "error" }, err.message));
  }
}

// -- one note ---------------------------------------------------------------------------------
const FIELDS = ["content", "context", "keywords", "tags", "state", "metadata", "event_time"];

function show(value) {
  if (Array.isArray(value)) return value.join(", ");
  if (value && typeof value === "object") return JSON.stringify(value);
  return String(value ?? "");
}

function changes(prev, cur) {
  if (!prev) return [el("div", { class: "change" }, "first version")];
  const out = [];
  for (const f of FIELDS) {
    const a = show(prev[f]);
    const b = show(cur[f]);
    if (a !== b) out.push(el("div", { class: "change" }, `${f}: `, el("del", {}, a || "∅"), " → ", el("ins", {}, b || "∅")));
  }
  return out.length ? out : [el("div", { class: "change" }, "no visible change")];
}

async function openNote(id) {
  const box = $("note");
  box.hidden = false;
  document.querySelector("main").classList.remove("no-note");
  fitCanvas();
  box.replaceChildren(el("p", {}, "loading…"));
  state.selected = id;
  try {
    const [note, links, history, calls] = await Promise.all([
      api(`/v1/notes/${encodeURIComponent(id)}`),
      api(`/v1/notes/${encodeURIComponent(id)}/links`),
      api(`/v1/notes/${encodeURIComponent(id)}/history`),
      api(`/v1/notes/${encodeURIComponent(id)}/calls`),
    ]);
    const byCall = new Map(calls.map((c) => [c.id, c]));
    const linkItems = links.map((l) => {
      const other = l.source_id === id ? l.target_id : l.source_id;
      const known = state.byId.get(other);
      const arrow = l.source_id === id ? "→" : "←";
      return el("li", { data: { id: other }, on: { click: () => openNote(other) } },
        `${arrow} ${known ? known.label : other}`, el("div", { class: "why" }, l.reason));
    });
    const versions = history.map((v, i) => {
      const call = v.llm_call_id ? byCall.get(v.llm_call_id) : null;
      const how = call
        ? `LLM call ${call.step} (${call.model}, prompt ${call.prompt_version}, ${call.input_tokens}+${call.output_tokens} tokens, ${Math.round(call.latency_ms)} ms)`
        : v.llm_call_id ? `LLM call ${v.llm_call_id}` : "no LLM call";
      return el("div", { class: `version ${v.cause}` },
        el("div", { class: "head" }, `v${v.version} · ${v.cause} · ${fmtTime(v.created_at)}`),
        el("div", {}, v.detail || ""), el("div", { class: "why" }, how), ...changes(history[i - 1], v));
    });
    box.replaceChildren(
      el("button", { class: "close", title: "close", on: { click: closeNote } }, "×"),
      el("h2", {}, "Note"),
      el("div", { class: "content", id: "note-content" }, note.content),
      el("div", { class: "context" }, note.context || "(no context yet)"),
      el("div", { class: "chips" }, note.keywords.map((k) => el("span", {}, k))),
      el("div", { class: "chips tags" }, note.tags.map((t) => el("span", {}, t))),
      el("dl", {},
        el("dt", {}, "state"), el("dd", { class: `state-${note.state}` }, note.state),
        el("dt", {}, "happened"), el("dd", {}, fmtTime(note.event_time)),
        el("dt", {}, "stored"), el("dd", {}, fmtTime(note.ingest_time)),
        el("dt", {}, "scope"), el("dd", {}, [note.user_id, note.agent_id, note.run_id].map((s) => s || "–").join(" / ")),
        el("dt", {}, "metadata"), el("dd", {}, JSON.stringify(note.metadata)),
        el("dt", {}, "id"), el("dd", {}, note.id)),
      el("h2", {}, `Links (${links.length})`),
      el("ul", { class: "links", id: "note-links" }, linkItems),
      el("h2", {}, `History (${history.length} ${history.length === 1 ? "version" : "versions"})`),
      el("div", { id: "note-history" }, versions),
      ...refusedItems(calls, id),
    );
    document.body.dataset.noteOpen = id;
    if (state.graph) {
      const node = state.graph.graphData().nodes.find((n) => n.id === id);
      if (node && node.x !== undefined) state.graph.centerAt(node.x, node.y, 500);
    }
    window.history.replaceState(null, "", `#note=${encodeURIComponent(id)}`);  // a link to this note
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, err.message));
  }
}

// what the grounding checks kept out of the LLM's answers about this note (inspectable, never stored)
function refusedItems(calls, id) {
  const items = calls.flatMap((c) => (c.refused || []).filter((r) => r.note_id === id).map((r) =>
    el("li", {}, `${r.field} · ${r.action} · ${c.step}: ${r.text}`, el("div", { class: "why" }, r.reason))));
  return items.length ? [el("h2", {}, `Kept out by the checks (${items.length})`),
    el("ul", { class: "refused", id: "note-refused" }, items)] : [];
}

function closeNote() {
  $("note").hidden = true;
  document.querySelector("main").classList.add("no-note");
  state.selected = null;
  fitCanvas();
}

// -- start ------------------------------------------------------------------------------------
async function start() {
  closeNote();
  const health = await fetch("/v1/health").then((r) => r.json());
  state.auth = health.auth;
  $("key-field").hidden = !state.auth;
  $("user-field").hidden = state.auth;
  $("key").value = sessionStorage.getItem("amem-key") || "";
  $("scope").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("amem-key", $("key").value.trim());
    loadGraph().catch((err) => status(err.message, true));
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("query").value.trim();
    if (q) search(q);
  });
  for (const id of ["tag", "after", "before"]) $(id).addEventListener("change", applyFilters);
  if (state.auth && !sessionStorage.getItem("amem-key")) {
    status("enter an API key and press Load");
    return;
  }
  await loadGraph().catch((err) => status(err.message, true));
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("q")) { $("query").value = hash.get("q"); search(hash.get("q")); }
  if (hash.get("note")) openNote(hash.get("note"));
}

window.amem = { state, openNote, search, loadGraph };
start();
