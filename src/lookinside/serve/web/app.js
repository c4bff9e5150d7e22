// The web inspector: the address names the view and its request's fields (the view route's JSON
// names, a nested field such as `seed` by its own name), the form writes the address, and the
// address is read into the JSON body sent to POST /lookinside/v1/views/<name>, whose answer is the view's
// record. So a look can be reloaded and shared, and the numbers drawn are the command's.

import { api, view } from "./api.js";
import { h } from "./draw.js";
import * as panels from "./panels.js";

const ORDER = ["tokens", "next-token", "forward", "attention", "lens", "ablate", "patch", "steer", "compare", "chat",
  "bench", "inspect"];
const DRAW = { tokens: panels.tokens, "next-token": panels.nextToken, forward: panels.forward, attention: panels.attention,
  lens: panels.lens, ablate: panels.ablate, patch: panels.patch, steer: panels.steer, compare: panels.compare,
  inspect: panels.inspect, bench: panels.bench, chat: panels.chat };
// What a bare address starts with, so that every view draws something at once (chat starts empty).
const EXAMPLE = { prompt: "The capital of France is", text: "The capital of France is", clean: "The capital of France is",
  corrupt: "The capital of Italy is", add: " Paris" };
// The page's own defaults where the command's would draw less than the view can: the lens grid, and a sweep
// to ablate unless the address names heads or a layer.
const PAGE_DEFAULTS = { lens: { all_positions: "true" }, ablate: { sweep: "heads" } };
// Query keys the page keeps for itself: the sampling controls of next-token (not request fields).
const CONTROLS = ["top_p", "min_p", "sampler_top_k"];

const $ = (id) => document.getElementById(id);
let forms = {};
let current = null;  // the running request's AbortController
const chatLog = [];

function fieldsOf(name) {
  if (panels.PAGE_FIELDS[name]) return panels.PAGE_FIELDS[name];
  return forms[name] ? forms[name].fields : {};
}

/** Flattened fields: [key in the address, path in the body, form], nested fields by their own name unless shadowed. */
function flat(name) {
  const fields = fieldsOf(name);
  const out = [];
  for (const [k, f] of Object.entries(fields)) {
    if (f.kind !== "group") out.push([k, [k], f]);
  }
  for (const [k, f] of Object.entries(fields)) {
    if (f.kind !== "group") continue;
    for (const [k2, f2] of Object.entries(f.fields)) if (!(k2 in fields)) out.push([k2, [k, k2], f2]);
  }
  return out;
}

/** One address value as the body's JSON value; what does not parse is sent as it is, for the server to refuse in one line. */
function parse(value, all, f) {
  if (f.kind === "pairs") {
    return all.flatMap((v) => v.split(",")).filter(Boolean).map((x) => x.split(".").map((n) => (/^-?\d+$/.test(n) ? Number(n) : n)));
  }
  if (f.kind === "list") return all;
  if (value === "" && (f.optional || f.kind !== "text")) return null;
  if (f.kind === "int") return /^-?\d+$/.test(value) ? Number(value) : value;
  if (f.kind === "float") return value.trim() !== "" && Number.isFinite(Number(value)) ? Number(value) : value;
  if (f.kind === "bool") return !["false", "0", "no", "off"].includes(value.toLowerCase());
  return value;
}

/** The view and its request body, read from the address. */
function readAddress() {
  const q = new URLSearchParams(location.search);
  const name = ORDER.includes(q.get("view")) ? q.get("view") : "next-token";
  const body = {};
  for (const [key, path, f] of flat(name)) {
    if (!q.has(key)) continue;
    const v = parse(q.get(key), q.getAll(key), f);
    if (v === null) continue;
    let into = body;
    for (const p of path.slice(0, -1)) into = into[p] = into[p] || {};
    into[path.at(-1)] = v;
  }
  return { name, body, q };
}

function fieldInput(key, f, value) {
  const id = `f-${key}`;
  const help = f.help || "";
  if (f.kind === "bool") {
    return h("label", { class: "field check", title: help }, h("input", { type: "checkbox", id, name: key,
      checked: value !== null && !["false", "0"].includes(value) }), key);
  }
  let input;
  if (f.kind === "choice") {
    input = h("select", { id, name: key, title: help }, h("option", { value: "" }, f.optional ? "–" : `(${f.default})`),
      f.choices.map((c) => h("option", { value: c, selected: value === c }, c)));
  } else if (f.kind === "text" && ["prompt", "text", "clean", "corrupt"].includes(key)) {
    input = h("textarea", { id, name: key, rows: 1, title: help, placeholder: help });
    input.value = value ?? "";
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
    });
  } else {
    input = h("input", { id, name: key, title: help, value: value ?? "",
      type: f.kind === "int" || f.kind === "float" ? "number" : "text", step: f.kind === "float" ? "any" : undefined,
      placeholder: f.default === undefined || f.default === null ? (f.optional ? "none" : "") : String(f.default) });
  }
  const wide = input.tagName === "TEXTAREA";
  return h("label", { class: `field${wide ? " wide" : ""}`, for: id }, key, input);
}

function buildForm(name, q) {
  const form = $("form");
  const fields = flat(name);
  const info = forms[name];
  form.replaceChildren(
    ...fields.map(([key, , f]) => fieldInput(key, f, !q.has(key) ? null : f.kind === "pairs" ? q.getAll(key).join(",")
      : q.get(key))),
    h("button", { type: "submit", class: "primary" }, name === "chat" ? "Send" : "Run"),
    info ? h("p", { class: "note" }, info.help) : "");
  form.onsubmit = (e) => {
    e.preventDefault();
    const next = new URLSearchParams({ view: name });
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.type === "checkbox") { if (el.checked) next.set(el.name, "true"); continue; }
      if (el.value !== "") next.set(el.name, el.value);
    }
    const keep = new URLSearchParams(location.search);
    for (const c of CONTROLS) if (keep.has(c) && name === "next-token") next.set(c, keep.get(c));
    history.pushState(null, "", `/?${next}`);
    route();
  };
}

function buildNav(active) {
  $("views").replaceChildren(...ORDER.map((name) => h("a", { href: `/?view=${name}`, "aria-current": name === active ? "page" : null,
    title: forms[name] ? forms[name].short : name === "chat" ? "A streamed chat, each token coloured" : "Step time per position",
    onclick: (e) => { e.preventDefault(); go(name); } }, name)));
}

/** Open a view, carrying over the text fields it shares with the one open now. */
function go(name) {
  const q = new URLSearchParams(location.search);
  const next = new URLSearchParams({ view: name });
  const keys = new Set(flat(name).map(([k]) => k));
  for (const k of ["prompt", "text"]) {
    const v = q.get("prompt") ?? q.get("text");
    if (keys.has(k) && v) next.set(k, v);
  }
  history.pushState(null, "", `/?${next}`);
  route();
}

function busy(on) {
  $("busy").hidden = !on;
  $("busy-text").hidden = !on;
  $("panel").setAttribute("aria-busy", String(on));
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

async function route() {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  let { name, body, q } = readAddress();
  // A bare address draws an example, written into the address so that it is what a reload shows.
  const keys = new Set(flat(name).map(([k]) => k));
  const fill = { ...(name === "chat" ? {} : EXAMPLE), ...(PAGE_DEFAULTS[name] || {}) };
  if (q.has("heads") || q.has("layer")) delete fill.sweep;
  const missing = Object.entries(fill).filter(([k]) => keys.has(k) && !q.has(k));
  if (missing.length) {
    for (const [k, v] of missing) q.set(k, v);
    history.replaceState(null, "", `/?${q}`);
    ({ name, body, q } = readAddress());
  }
  buildNav(name);
  buildForm(name, q);
  document.title = `lookinside · ${name}`;
  const panel = $("panel");
  panel.replaceChildren();
  panel.dataset.view = name;
  panel.dataset.state = "loading";
  showError("");
  busy(true);
  const shown = () => { if (window.lookinside.firstDrawMs === undefined) window.lookinside.firstDrawMs = performance.now(); };
  const ctx = { body, query: q, shown, chatLog,
    go: (changes) => { history.pushState(null, "", edited(changes)); route(); },  // another look, drawn anew
    remember: (changes) => history.replaceState(null, "", edited(changes)) };
  try {
    const answer = forms[name] ? await view(name, body, controller.signal) : null;
    if (controller.signal.aborted) return;
    await DRAW[name](panel, answer, ctx);
    if (current !== controller) return;
    panel.dataset.state = "drawn";
    shown();
  } catch (err) {
    if (err.name === "AbortError" || current !== controller) return;
    panel.dataset.state = "error";
    showError(String(err.message || err).split("\n")[0]);
  } finally {
    if (current === controller) busy(false);
  }
}

/** The address with `changes` made (null removes a field); the form shows the new values too. */
function edited(changes) {
  const now = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) now.delete(k); else now.set(k, v);
    const input = document.getElementById(`f-${k}`);
    if (input) input.value = v === null ? "" : String(v);
  }
  return `/?${now}`;
}

async function start() {
  busy(true);
  try {
    const [info, f] = await Promise.all([api("/lookinside/v1/info"), api("/lookinside/v1/web/forms")]);
    forms = Object.fromEntries(f.views.map((v) => [v.name, v]));
    $("model").textContent = `${info.model} · ${info.parameters.toLocaleString()} parameters · ${info.dtype} on ${info.device}`
      + ` · context ${info.context_length}`;
  } catch (err) {
    busy(false);
    $("model").textContent = "not connected";
    showError(String(err.message || err).split("\n")[0]);
    return;
  }
  window.addEventListener("popstate", route);
  await route();
}

start();
