// The controlplane web console: a read-only client of the admin server's JSON under /debug/.
// Every piece of data becomes DOM text (textContent), never markup, so a proxy id or a policy name with
// HTML in it is shown as typed. Live: /debug/events (server-sent events) says when to fetch again.
"use strict";

const PAGE_SIZE = 100;
const TYPES = ["clusters", "endpoints", "listeners", "routes", "secrets"];
const state = { view: "proxies", arg: "", page: 0, filter: "", stateFilter: "", open: new Set(),
                configType: "clusters", data: null, rendering: false, again: false };

// --- DOM helpers -----------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  append(el, children);
  return el;
}

const DASH = "—";

function when(seconds) {
  if (seconds === undefined || seconds === null || seconds === "") return DASH;
  const date = typeof seconds === "number" ? new Date(seconds * 1000) : new Date(seconds);
  return isNaN(date) ? String(seconds) : date.toLocaleString();
}

function short(version) { return version ? String(version).slice(0, 8) : ""; }

function stateClass(text) {
  if (text.startsWith("invalid")) return "invalid";
  return text.replace(/\s+/g, "-");
}

function badge(text, extra) {
  return h("span", { class: `state ${stateClass(text)}`, "data-state": text }, extra ? `${text} ${extra}` : text);
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function matches(text, filter) {
  return !filter || text.toLowerCase().includes(filter.toLowerCase());
}

function pager(total, rerender) {
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const from = total ? state.page * PAGE_SIZE + 1 : 0;
  const to = Math.min(total, (state.page + 1) * PAGE_SIZE);
  return h("div", { class: "pager" },
    h("button", { id: "page-previous", disabled: state.page === 0, onclick: () => { state.page--; rerender(); } },
      "‹ previous"),
    h("span", { id: "page-info" }, `${from}-${to} of ${total}`),
    h("button", { id: "page-next", disabled: state.page >= pages - 1,
                  onclick: () => { state.page++; rerender(); } }, "next ›"));
}

function pageOf(items) {
  return items.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
}

function searchBox(placeholder) {
  const input = h("input", { type: "search", id: "search", placeholder, value: state.filter });
  input.value = state.filter;
  input.addEventListener("input", () => { state.filter = input.value; state.page = 0; draw(); });
  return input;
}

// --- Proxies ---------------------------------------------------------------------------------------

function proxyState(row) {
  const states = Object.values(row.types || {}).map((t) => t.state);
  if (states.includes("NACKED")) return "NACKED";
  if (row.synced) return "SYNCED";
  return "STALE";
}

function identityCell(row) {
  const id = row.identity;
  if (!id) return DASH;
  return h("div", {}, h("div", { class: "mono" }, id.spiffe_id || DASH),
    id.cert_expiry ? h("div", { class: "muted" }, `expires ${when(id.cert_expiry)}`) : null,
    id.cert_serial ? h("div", { class: "muted mono" }, `serial ${id.cert_serial}`) : null);
}

function proxyControls() {
  const select = h("select", { id: "state-filter" },
    ["", "SYNCED", "STALE", "NACKED"].map((s) => h("option", { value: s, selected: s === state.stateFilter },
      s || "every state")));
  select.addEventListener("change", () => { state.stateFilter = select.value; state.page = 0; draw(); });
  return [searchBox("filter by node, role, namespace, type, error…"), select, h("span", { id: "summary",
    class: "summary" })];
}

function drawProxies(rows) {
  const counts = { SYNCED: 0, STALE: 0, NACKED: 0 };
  for (const row of rows) counts[proxyState(row)]++;
  const summary = document.getElementById("summary");
  if (summary) {
    summary.replaceChildren(h("span", {}, h("b", {}, rows.length), " proxies"),
      ...Object.entries(counts).map(([k, v]) => h("span", {}, badge(k), " ", h("b", { id: `count-${k}` }, v))));
  }
  const shown = rows.filter((row) => (!state.stateFilter || proxyState(row) === state.stateFilter) &&
    matches([row.node, row.role, row.namespace, row.proxy, ...Object.keys(row.types || {}),
      ...Object.values(row.types || {}).map((t) => `${t.state} ${t.nack_error}`)].join(" "), state.filter));
  const types = TYPES.filter((t) => rows.some((row) => row.types && row.types[t]));
  const body = h("tbody", {});
  for (const row of pageOf(shown)) {
    const link = h("a", { href: `#/proxy/${encodeURIComponent(row.node)}`, class: "node-id" }, row.node);
    body.appendChild(h("tr", { class: "proxy", "data-node": row.node, "data-state": proxyState(row) },
      h("td", { class: "mono" }, link),
      h("td", {}, row.role || DASH), h("td", {}, row.namespace || DASH), h("td", {}, identityCell(row)),
      h("td", {}, row.envoy_version || DASH), h("td", {}, when(row.connected_since ?? row.connected_at)),
      types.map((t) => {
        const s = row.types[t];
        return h("td", { "data-type": t }, s ? [badge(s.state),
          h("span", { class: "version" }, short(s.acked_version || s.sent_version))] : DASH);
      })));
    for (const [type, s] of Object.entries(row.types || {})) {
      if (s.state !== "NACKED") continue;
      body.appendChild(h("tr", { class: "nack", "data-node": row.node, "data-type": type },
        h("td", { colspan: 6 + types.length },
          h("b", {}, `${type} ${short(s.nacked_version)} rejected by Envoy:`),
          h("div", { class: "nack-text" }, s.nack_error),
          h("div", {}, "from policy: ", (s.nack_origins || []).length ? h("ul", { class: "origins" },
            s.nack_origins.map((o) => h("li", { class: "mono origin" }, o))) : "unknown"))));
    }
  }
  return [
    h("table", { id: "proxies" }, h("thead", {}, h("tr", {},
      ["Node", "Role", "Namespace", "Identity", "Envoy", "Connected since", ...types].map((c) => h("th", {}, c)))),
    body),
    shown.length ? null : h("p", { class: "muted" }, rows.length ? "No proxy matches." : "No proxy connected."),
    pager(shown.length, draw),
  ];
}

// --- Policy ----------------------------------------------------------------------------------------

function affected(nodes) {
  if (!nodes.length) return DASH;
  const links = nodes.map((n, i) => [i ? ", " : "",
    h("a", { class: "mono affected-proxy", href: `#/proxy/${encodeURIComponent(n)}` }, n)]);
  if (nodes.length <= 4) return links;
  const key = `affected/${nodes.join(",")}`;
  const box = h("details", { open: state.open.has(key) }, h("summary", {}, `${nodes.length} proxies`), h("div", {}, links));
  box.addEventListener("toggle", () => box.open ? state.open.add(key) : state.open.delete(key));
  return box;
}

function drawPolicy(data) {
  const shown = data.objects.filter((o) => matches([o.key, o.file, o.state, ...o.proxies,
    ...o.diagnostics.map((d) => d.text), ...Object.values(o.resources).flat()].join(" "), state.filter));
  const body = h("tbody", {});
  for (const o of pageOf(shown)) {
    const resources = Object.entries(o.resources).map(([type, names]) =>
      h("div", { class: "resources", "data-type": type }, h("b", {}, `${type}: `),
        names.map((n, i) => [i ? ", " : "", h("span", { class: "mono resource" }, n)])));
    body.appendChild(h("tr", { class: "object", "data-key": o.key, "data-state": o.state },
      h("td", { class: "mono" }, o.key),
      h("td", { class: "mono" }, o.file ? `${o.file}:${o.line}` : DASH),
      h("td", {}, badge(o.state), o.file_kept && o.state === "applied"
        ? h("div", { class: "muted" }, "file has errors: its last valid version is in effect") : null),
      h("td", {}, o.diagnostics.map((d) => h("div", { class: "diagnostic" }, badge(d.severity), " ",
        h("span", { class: "mono" }, d.text)))),
      h("td", { class: "affected" }, affected(o.proxies)),
      h("td", {}, resources.length ? resources : DASH)));
  }
  return [
    h("p", { class: "muted" }, `${data.objects.length} objects, ${data.diagnostics.length} diagnostics`,
      data.kept_last_valid.length ? `; last valid version in effect: ${data.kept_last_valid.join(", ")}` : "",
      data.not_applied.length ? `; not applied: ${data.not_applied.join(", ")}` : ""),
    h("table", { id: "policy" }, h("thead", {}, h("tr", {},
      ["Object", "Source", "State", "Diagnostics", "Proxies it affects", "Resources it became"]
        .map((c) => h("th", {}, c)))), body),
    pager(shown.length, draw),
  ];
}

// --- A proxy's configuration -------------------------------------------------------------------------

// Line diff (longest common subsequence) of two JSON texts; large inputs fall back to "both shown".
function diffLines(before, after) {
  const a = before.split("\n"), b = after.split("\n");
  if (a.length * b.length > 4e6) return null;
  const dp = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--)
    for (let j = b.length - 1; j >= 0; j--)
      dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { out.push([" ", a[i]]); i++; j++; }
    else if (j < b.length && (i >= a.length || dp[i][j + 1] >= dp[i + 1][j])) out.push(["+", b[j++]]);
    else out.push(["-", a[i++]]);
  }
  return out;
}

function secretSummary(resource) {
  const parts = [];
  const walk = (value) => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (value && typeof value === "object") {
      if (Array.isArray(value.certificates)) {
        for (const c of value.certificates)
          parts.push(`${c.subject} ${(c.names || []).join(" ")} expires ${when(c.not_after)}`);
      }
      Object.values(value).forEach(walk);
    }
  };
  walk(resource);
  return parts.length ? h("div", { class: "muted" }, parts.join("; ")) : null;
}

function resourceBlock(type, item) {
  const key = `${type}/${item.name}`;
  const text = JSON.stringify(item.resource, null, 2);
  const details = h("details", { class: "resource", "data-name": item.name, open: state.open.has(key) },
    h("summary", {}, h("span", { class: "mono" }, item.name), h("span", { class: "version" }, short(item.version)),
      item.change ? [" ", badge(item.change === "added" ? "added" : "changed")] : null,
      " ", h("span", { class: "muted" }, (item.origins || []).join(", ") || "no policy origin")),
    h("div", {}, type === "secrets" ? secretSummary(item.resource) : null, h("pre", {}, text),
      item.previous ? diffBlock(JSON.stringify(item.previous, null, 2), text) : null));
  details.addEventListener("toggle", () => details.open ? state.open.add(key) : state.open.delete(key));
  return details;
}

function diffBlock(before, after) {
  const lines = diffLines(before, after);
  if (lines === null) return h("div", {}, h("b", {}, "previous version:"), h("pre", {}, before));
  return h("div", {}, h("b", {}, "diff against the previous version:"), h("pre", { class: "diff" },
    lines.filter(([op]) => op !== " ").length ? lines.map(([op, line]) =>
      h("span", { class: op === "+" ? "diff-add" : op === "-" ? "diff-del" : "" }, `${op} ${line}\n`)) : "same"));
}

function drawProxyConfig(data) {
  const tabs = h("div", { class: "pager" }, TYPES.map((t) => h("button", {
    class: t === state.configType ? "active" : "", "data-type": t,
    onclick: () => { state.configType = t; draw(); } }, `${t} (${(data[t] || []).length})`)));
  const items = (data[state.configType] || []).filter((i) => matches(`${i.name} ${(i.origins || []).join(" ")}`,
    state.filter));
  const removed = data[`removed_${state.configType}`] || [];
  return [
    h("p", {}, h("b", { class: "mono", id: "config-node" }, data.node), " ", h("span", { class: "muted" },
      `${data.proxy} · snapshot ${short(data.snapshot_version)}`,
      data.previous_snapshot_version ? ` · previous ${short(data.previous_snapshot_version)}` : "")),
    tabs, pageOf(items).map((item) => resourceBlock(state.configType, item)),
    removed.length ? h("p", {}, "removed by the last change: ",
      removed.map((n) => h("span", { class: "mono" }, `${n} `))) : null,
    pager(items.length, draw),
  ];
}

// --- Changes ---------------------------------------------------------------------------------------

function drawChanges(changes) {
  if (!changes.length) return h("p", { class: "muted" }, "No reload yet.");
  return changes.map((c) => h("div", { class: "card change", "data-id": c.id },
    h("h3", {}, `#${c.id} · ${when(c.at)}`),
    h("div", {}, h("b", {}, "files: "), Object.keys(c.files).length ? Object.entries(c.files).map(([f, how]) =>
      h("span", { class: "mono" }, `${f} (${how}) `)) : "none changed"),
    c.diagnostics.length ? h("div", {}, h("b", {}, "diagnostics: "),
      c.diagnostics.map((d) => h("div", { class: "mono" }, d))) : null,
    h("div", {}, h("b", {}, "resources: "), Object.keys(c.resources).length ? Object.entries(c.resources).map(
      ([type, kinds]) => h("div", { class: "tags" }, h("span", {}, `${type}:`),
        Object.entries(kinds).filter(([, names]) => names.length).map(([kind, names]) =>
          h("span", { title: names.join("\n") }, `${c.counts[type][kind]} ${kind} (${names.slice(0, 5).join(", ")}` +
            `${names.length > 5 ? ", …" : ""})`)))) : "no resource changed"),
    c.proxies.length ? h("table", {}, h("thead", {}, h("tr", {},
      ["Proxy", "Delivery", "ACKed after"].map((t) => h("th", {}, t)))),
      h("tbody", {}, c.proxies.map((p) => h("tr", { "data-node": p.node },
        h("td", { class: "mono" }, p.node), h("td", {}, badge(p.outcome)),
        h("td", {}, p.ack_seconds === null ? DASH : `${(p.ack_seconds * 1000).toFixed(0)} ms`)))))
      : h("div", { class: "muted" }, "no connected proxy received it"),
    c.proxies_total > c.proxies.length ? h("div", { class: "muted" },
      `${c.acked} of ${c.proxies_total} proxies ACKed; the first ${c.proxies.length} are listed`) : null));
}

// --- Service graph -----------------------------------------------------------------------------------

// Callers (gateways) on the left, the mesh's workloads on a circle, services that call nobody on the right;
// hovering a node highlights its edges (a sidecar may call every service, so the picture is dense).
function drawGraph(data) {
  if (!data.nodes.length) return h("p", { class: "muted" }, "No proxy connected.");
  const out = new Set(data.edges.map((e) => e.from)), into = new Set(data.edges.map((e) => e.to));
  const left = data.nodes.filter((n) => !into.has(n.id));
  const right = data.nodes.filter((n) => into.has(n.id) && !out.has(n.id));
  const ring = data.nodes.filter((n) => into.has(n.id) && out.has(n.id));
  const R = Math.max(140, ring.length * 22), W = 190, H = 30;
  const cx = W + 140 + R, cy = 40 + R;
  const width = cx + R + W + 160, height = Math.max(2 * R + 80, 60 + Math.max(left.length, right.length) * 44);
  const pos = new Map();
  ring.forEach((n, i) => {
    const a = (2 * Math.PI * i) / ring.length - Math.PI / 2;
    pos.set(n.id, { x: cx + R * Math.cos(a) - W / 2, y: cy + R * Math.sin(a) - H / 2 });
  });
  const column = (nodes, x) => nodes.forEach((n, i) => pos.set(n.id, {
    x, y: cy - (nodes.length * 44) / 2 + i * 44 }));
  column(left, 10);
  column(right, width - W - 10);
  const root = svg("svg", { id: "graph", width, height, viewBox: `0 0 ${width} ${height}` },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8c959f" }))));
  const edges = [];
  for (const e of data.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    const x1 = a.x + W / 2, y1 = a.y + H / 2, x2 = b.x + W / 2, y2 = b.y + H / 2;
    const line = svg("path", { class: "edge", "data-from": e.from, "data-to": e.to,
      // bowed halfway towards the centre: chords between neighbours stay apart from the rest
      d: `M ${x1} ${y1} Q ${(x1 + x2) / 4 + cx / 2} ${(y1 + y2) / 4 + cy / 2}, ${x2} ${y2}` },
      svg("title", {}, `${e.from} → ${e.to} (${e.proxies.length} proxies)`));
    edges.push(line);
    root.appendChild(line);
  }
  for (const n of data.nodes) {
    const p = pos.get(n.id);
    const g = svg("g", { class: `node ${n.kind}`, "data-id": n.id },
      svg("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6 }),
      svg("text", { x: p.x + 8, y: p.y + 19 }, n.id.length > 26 ? `${n.id.slice(0, 25)}…` : n.id),
      svg("title", {}, `${n.id} (${n.kind})`));
    g.addEventListener("mouseenter", () => edges.forEach((e) => e.classList.toggle("hot",
      e.dataset.from === n.id || e.dataset.to === n.id)));
    g.addEventListener("mouseleave", () => edges.forEach((e) => e.classList.remove("hot")));
    root.appendChild(g);
  }
  return [h("p", { class: "muted" }, `${data.nodes.length} workloads and services, ${data.edges.length} ` +
    "may-call edges, from the routes and TCP listeners each proxy was sent. Hover a node for its edges."), root];
}

// --- routing and live updates --------------------------------------------------------------------------

const VIEWS = {
  proxies: { path: () => "/debug/proxies", draw: drawProxies, controls: proxyControls },
  policy: { path: () => "/debug/policy", draw: drawPolicy,
            controls: () => [searchBox("filter by object, file, proxy, resource, diagnostic…")] },
  proxy: { path: () => `/debug/proxy?node=${encodeURIComponent(state.arg)}`, draw: drawProxyConfig,
           controls: proxyPicker },
  changes: { path: () => "/debug/changes", draw: drawChanges, controls: () => [] },
  graph: { path: () => "/debug/graph", draw: drawGraph, controls: () => [] },
};

function proxyPicker() {
  const input = h("input", { type: "search", id: "node-picker", list: "nodes", placeholder: "node id",
    value: state.arg });
  input.value = state.arg;
  input.addEventListener("change", () => { location.hash = `#/proxy/${encodeURIComponent(input.value)}`; });
  const list = h("datalist", { id: "nodes" });
  getJSON("/debug/proxies").then((rows) => {
    list.replaceChildren(...rows.map((r) => h("option", { value: r.node })));
    if (!state.arg && rows.length) location.hash = `#/proxy/${encodeURIComponent(rows[0].node)}`;
  }).catch(() => {});
  return [input, list, searchBox("filter resources by name or origin…")];
}

function draw() {
  const view = document.getElementById("view");
  if (state.data instanceof Error) {
    view.replaceChildren(h("p", { class: "error" }, state.data.message));
  } else if (state.data !== null) {
    const scroll = window.scrollY;
    view.replaceChildren(...[VIEWS[state.view].draw(state.data)].flat(Infinity).filter(Boolean));
    window.scrollTo(0, scroll);
  }
}

async function refresh() {
  if (state.rendering) { state.again = true; return; }  // one fetch at a time; the newest wins
  state.rendering = true;
  const path = state.view === "proxy" && !state.arg ? null : VIEWS[state.view].path();
  let data = null;
  try {
    data = path === null ? null : await getJSON(path);
  } catch (error) {
    data = error;
  } finally {
    state.rendering = false;
  }
  // the user may have moved to another view meanwhile: its data is on its way (state.again)
  const current = state.view === "proxy" && !state.arg ? null : VIEWS[state.view].path();
  if (current === path) {
    state.data = data;
    draw();
  } else {
    state.again = true;
  }
  document.body.dataset.updated = String(Date.now());
  if (state.again) { state.again = false; refresh(); }
}

function route() {
  const [, view = "proxies", ...rest] = (location.hash || "#/proxies").split("/");
  state.view = VIEWS[view] ? view : "proxies";
  state.arg = rest.length ? decodeURIComponent(rest.join("/")) : "";
  state.page = 0;
  state.filter = "";
  state.data = null;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === state.view);
  document.getElementById("controls").replaceChildren(...VIEWS[state.view].controls());
  document.getElementById("view").replaceChildren(h("p", { class: "muted" }, "Loading…"));
  refresh();
}

function connect() {
  const live = document.getElementById("live");
  const events = new EventSource("/debug/events");
  events.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  events.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  events.addEventListener("update", () => refresh());
}

window.addEventListener("hashchange", route);
route();
connect();
