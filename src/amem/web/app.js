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

// -- the view: fitted to the graph until the user zooms or pans -------------------------------
const FIT_MARGIN = 36;  // px around the nodes' bounding box
const FIT_MAX_ZOOM = 8;  // a few notes are not blown up to fill the screen

function visibleNodes() {
  return state.graph ? state.graph.graphData().nodes.filter((n) => visible(n) && n.x !== undefined) : [];
}

// the space the nodes are fitted into: the canvas less a margin, and less room on the right for the
// labels of the rightmost nodes (labels go right of their node when they can)
function fitArea() {
  const box = $("graph");
  const [W, H] = [box.clientWidth, box.clientHeight];
  const right = FIT_MARGIN + Math.min(180, W * 0.2);
  return { left: FIT_MARGIN, top: FIT_MARGIN, w: Math.max(W - FIT_MARGIN - right, 50), h: Math.max(H - 2 * FIT_MARGIN, 50), W, H };
}

function fitView(ms = 0) {
  const nodes = visibleNodes();
  if (!nodes.length) return;
  const a = fitArea();
  const xs = nodes.map((n) => n.x);
  const ys = nodes.map((n) => n.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const k = Math.min(a.w / Math.max(x1 - x0, 1e-6), a.h / Math.max(y1 - y0, 1e-6), FIT_MAX_ZOOM);
  // the graph point shown at the canvas's centre, so that the box's centre lands at the area's centre
  const cx = (x0 + x1) / 2 + (a.W / 2 - (a.left + a.w / 2)) / k;
  const cy = (y0 + y1) / 2 + (a.H / 2 - (a.top + a.h / 2)) / k;
  state.graph.centerAt(cx, cy, ms).zoom(k, ms);
}

function refit(ms = 0) {
  if (state.autoFit) fitView(ms);
}

// A user's wheel or drag ends the automatic fitting; d3-zoom stops these events at the canvas, so they
// are seen on the way down (capture). A click (no movement) leaves it on.
function watchUser(box) {
  let down = null;
  box.addEventListener("wheel", () => { state.autoFit = false; }, { capture: true, passive: true });
  box.addEventListener("pointerdown", (e) => { down = [e.clientX, e.clientY]; }, { capture: true });
  box.addEventListener("pointerup", () => { down = null; }, { capture: true });
  box.addEventListener("pointermove", (e) => {
    if (down && e.buttons && Math.hypot(e.clientX - down[0], e.clientY - down[1]) > 4) state.autoFit = false;
  }, { capture: true });
}

// Pulls every node gently to the middle, harder along the canvas's short side, so the layout takes the
// canvas's shape (and unlinked notes stay near the rest instead of drifting off).
function aspectForce() {
  let nodes = [];
  const force = (alpha) => {
    const a = fitArea();
    const aspect = a.w / a.h;
    const kx = 0.03 * Math.max(1, 1 / aspect) ** 2;
    const ky = 0.03 * Math.max(1, aspect) ** 2;
    for (const n of nodes) {
      n.vx -= n.x * kx * alpha;
      n.vy -= n.y * ky * alpha;
    }
  };
  force.initialize = (ns) => { nodes = ns; };
  return force;
}

// -- labels: placed on screen, most important first, never on top of each other ------------------
const LABEL_SIZE = 12;
const LABEL_FONT = `${LABEL_SIZE}px system-ui, sans-serif`;
const LABEL_MAX = 300;  // labels drawn at most per frame
const widths = new Map();

function textWidth(ctx, text) {
  let w = widths.get(text);
  if (w === undefined) {
    w = ctx.measureText(text).width;
    if (widths.size > 20000) widths.clear();
    widths.set(text, w);
  }
  return w;
}

function shorten(text, chars) {
  if (text.length <= chars) return text;
  const cut = text.slice(0, chars - 1);
  const space = cut.lastIndexOf(" ");
  return `${(space > chars / 2 ? cut.slice(0, space) : cut).replace(/[\s,.;:–-]+$/, "")}…`;
}

// most important first: the open note, search hits, then the most linked, then the newest
function labelOrder() {
  const degree = new Map();
  for (const e of state.data ? state.data.edges : []) {
    degree.set(e.source, (degree.get(e.source) || 0) + 1);
    degree.set(e.target, (degree.get(e.target) || 0) + 1);
  }
  const rank = (n) => (state.selected === n.id ? 2 : 0) + (state.hits.has(n.id) ? 1 : 0);
  state.order = state.graph.graphData().nodes.slice().sort((a, b) =>
    rank(b) - rank(a) || (degree.get(b.id) || 0) - (degree.get(a.id) || 0) || (a.event_time < b.event_time ? 1 : -1));
}

// A grid of occupied boxes: each box is checked against the boxes in its cells only.
class Boxes {
  constructor(cell = 64) { this.cell = cell; this.cells = new Map(); }
  *keys(b) {
    const c = this.cell;
    for (let i = Math.floor(b.x / c); i <= Math.floor((b.x + b.w) / c); i++)
      for (let j = Math.floor(b.y / c); j <= Math.floor((b.y + b.h) / c); j++) yield `${i},${j}`;
  }
  free(b, except) {
    for (const key of this.keys(b))
      for (const o of this.cells.get(key) || [])
        if (o.id !== except && b.x < o.x + o.w && o.x < b.x + b.w && b.y < o.y + o.h && o.y < b.y + b.h) return false;
    return true;
  }
  add(b) {
    for (const key of this.keys(b)) {
      const list = this.cells.get(key);
      if (list) list.push(b); else this.cells.set(key, [b]);
    }
  }
}

function radius(n) {
  return state.hits.has(n.id) || state.selected === n.id ? 7 : 4;
}

// Each label goes right of its node, else left, below or above, in full (up to 40 characters), else
// shortened; where none of these is free of other labels and of nodes, it is left out (hover shows it).
function placeLabels(ctx) {
  const g = state.graph;
  const box = $("graph");
  const [W, H] = [box.clientWidth, box.clientHeight];
  ctx.font = LABEL_FONT;
  const taken = new Boxes();
  const shown = [];
  const nodes = (state.order || []).filter(visible);
  const at = new Map();
  for (const n of nodes) {
    if (n.x === undefined) continue;
    const p = g.graph2ScreenCoords(n.x, n.y);
    if (p.x < -50 || p.y < -50 || p.x > W + 50 || p.y > H + 50) continue;
    at.set(n.id, p);
    const r = radius(n) + 1;
    taken.add({ id: n.id, x: p.x - r, y: p.y - r, w: 2 * r, h: 2 * r });
  }
  const button = $("fit");  // the Fit button sits over the canvas: no label under it
  if (button) {
    const [b, c] = [button.getBoundingClientRect(), box.getBoundingClientRect()];
    taken.add({ id: null, x: b.left - c.left - 4, y: b.top - c.top - 4, w: b.width + 8, h: b.height + 8 });
  }
  const h = LABEL_SIZE + 4;
  const before = state.labelSpots || new Map();
  const spots = new Map();
  for (const n of nodes) {
    if (shown.length >= LABEL_MAX) break;
    const p = at.get(n.id);
    if (!p) continue;
    const r = radius(n) + 3;
    const texts = [shorten(n.label, 40), shorten(n.label, 20)].filter((t, i, all) => all.indexOf(t) === i);
    const tries = [];
    for (const text of texts) {
      const w = textWidth(ctx, text) + 4;
      for (const [side, x, y] of [
        ["right", p.x + r, p.y - h / 2], ["left", p.x - r - w, p.y - h / 2],
        ["below", p.x - w / 2, p.y + r], ["above", p.x - w / 2, p.y - r - h],
      ]) tries.push({ id: n.id, text, side, x, y, w, h });
    }
    const last = before.get(n.id);  // where it was last frame first: labels do not jump about
    if (last) tries.sort((a, b) => (b.side === last.side && b.text === last.text) - (a.side === last.side && a.text === last.text));
    const spot = tries.find((t) => t.x >= 0 && t.y >= 0 && t.x + t.w <= W && t.y + t.h <= H && taken.free(t, n.id));
    if (!spot) continue;
    taken.add(spot);
    spots.set(n.id, spot);
    shown.push(spot);
  }
  state.labelSpots = spots;
  state.labels = shown;  // for tests and tools: the drawn boxes, in canvas pixels
  return shown;
}

function drawLabels(ctx) {
  const shown = placeLabels(ctx);
  const ratio = ctx.canvas.width / Math.max($("graph").clientWidth, 1);
  ctx.save();
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.font = LABEL_FONT;
  ctx.textBaseline = "middle";
  ctx.lineJoin = "round";
  for (const s of shown) {
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(250,251,253,0.9)";  // a halo of the background: readable across links
    ctx.strokeText(s.text, s.x + 2, s.y + s.h / 2);
    ctx.fillStyle = state.selected === s.id ? "#000" : "#1d2330";
    ctx.fillText(s.text, s.x + 2, s.y + s.h / 2);
  }
  ctx.restore();
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
      const r = radius(n) / scale;  // constant on screen, whatever the zoom
      ctx.beginPath();
      ctx.arc(n.x, n.y, r, 0, 2 * Math.PI);
      ctx.fillStyle = n.state === "enriched" ? tagColour(n.tags[0]) : "#e0a030";
      ctx.fill();
      if (marked) {
        ctx.lineWidth = 2 / scale;
        ctx.strokeStyle = state.selected === n.id ? "#111" : "#d8283b";
        ctx.stroke();
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
    .onRenderFramePost((ctx) => {
      drawLabels(ctx);
      document.body.dataset.drawnNodes = String(state.drawn);
    })
    .onNodeClick((n) => openNote(n.id))
    .cooldownTicks(150)
    .cooldownTime(6000)
    .onEngineTick(() => {  // follow the layout while it settles, a few times a second
      const now = performance.now();
      if (state.autoFit && now - (state.lastFit || 0) > 250) { state.lastFit = now; fitView(0); }
    })
    .onEngineStop(() => {
      refit(300);
      document.body.dataset.graphReady = "yes";
    });
  state.graph.d3Force("charge").strength(-30);
  state.graph.d3Force("link").distance(30);
  state.graph.d3Force("aspect", aspectForce());
  watchUser(box);
  const fit = el("button", { id: "fit", type: "button", title: "Fit the whole graph in view" }, "Fit");
  fit.addEventListener("click", () => { state.autoFit = true; fitView(400); });
  box.append(fit);
  window.addEventListener("resize", fitCanvas);
  return state.graph;
}

function fitCanvas() {
  const box = $("graph");
  if (state.graph) {
    state.graph.width(box.clientWidth).height(box.clientHeight);
    refit(0);
  }
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
  state.autoFit = true;  // a new graph opens fitted to the view
  ensureGraph().warmupTicks(g.nodes.length <= 500 ? 100 : 0).graphData({
    nodes: g.nodes.map((n) => ({ ...n })),
    links: g.edges.map((e) => ({ source: e.source, target: e.target, reason: e.reason })),
  });
  labelOrder();
  refit(0);
  document.body.dataset.graphNodes = String(g.nodes.length);
  const more = g.truncated ? ` (newest of ${g.total_notes.toLocaleString()})` : "";
  status(`${g.nodes.length.toLocaleString()} notes${more}, ${g.edges.length.toLocaleString()} links`);
  applyFilters();
}

function applyFilters() {
  if (!state.graph || !state.data) return;
  state.graph.nodeVisibility(state.graph.nodeVisibility()).linkVisibility(state.graph.linkVisibility());
  refit(300);
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
    if (state.graph) {
      labelOrder();  // hits are named first
      state.graph.nodeColor(state.graph.nodeColor());
    }
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
      labelOrder();  // its label first
      const node = state.graph.graphData().nodes.find((n) => n.id === id);
      // a fitted view shows every note already; a view the user moved is brought to this one
      if (node && node.x !== undefined && !state.autoFit) state.graph.centerAt(node.x, node.y, 500);
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
  if (state.graph) labelOrder();
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

window.amem = { state, openNote, search, loadGraph, fitView, LABEL_FONT };
start();
