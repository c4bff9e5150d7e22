// One drawing per view: (panel element, the route's answer, context) -> the panel filled in.
// `answer.record` is the view's record (core/records.py and the records it holds, by their field
// names; api.js's `view` has put its non-finite numbers back), the one thing a panel reads;
// `answer.sent` is the same record as the server sent it, which the panel's "Save JSON" writes.
// Nothing here computes a number the server gave, except the sampling controls' redraw
// (sampling.js, the core's formula): what a record works out in Python (a property named in its
// class's DERIVED, such as `Generation.perplexity` or `PatchResult.layer_names`) travels in the
// record beside its fields, and is read here, never worked out again.

import { pieces, stream, view } from "./api.js";
import { bars, h, heatmap, legend, prob, readout, s, saveBar, show, tokenRun } from "./draw.js";
import { distribution } from "./sampling.js";

/** The page's own timings, read by the browser test and shown in docs/web.md. */
export const timings = window.lookinside = window.lookinside || { redrawMs: [] };

function chips(tokens) {
  return h("div", { class: "chips", "aria-label": "the prompt's tokens" }, tokens.map((t) => h("span",
    { class: `chip ${t.kind}` }, show(t.piece), h("small", {}, String(t.id)))));
}

/** The panel's title and its save buttons; `data` gives what "Save JSON" writes (a view's record as it was sent). */
function head(title, name, panel, data) {
  return [h("h2", {}, title), saveBar(name, panel, data)];
}

/** A probability short enough for a heat map's cell: 0.9995, 0.0123, 1e-8. */
function brief(p) {
  return p >= 1e-4 || p === 0 ? p.toFixed(4) : p.toExponential(0);
}

function range(min, max) {
  return (v) => (max > min ? (v - min) / (max - min) : 1);
}

function extent(matrix) {
  const flat = matrix.flat().filter((v) => Number.isFinite(v));
  return [Math.min(...flat), Math.max(...flat)];
}

// ---- tokens

export function tokens(panel, answer) {
  const j = answer.record;
  const out = readout();
  const items = j.tokens.map((t) => ({ text: t.piece, t: t.kind === "special" ? 0.1 : t.kind === "byte" ? 0.75 : 0.45,
    say: `#${t.index} id ${t.id} ${t.kind} piece ${JSON.stringify(t.piece)} text ${JSON.stringify(t.text)}` +
      (t.byte !== null && t.byte !== undefined ? ` byte 0x${t.byte.toString(16).toUpperCase()}` : "") +
      (t.joined ? ` (the bytes so far make ${JSON.stringify(t.joined)})` : "") }));
  panel.append(...head(`${j.tokens.length} tokens (vocabulary ${j.vocab_size.toLocaleString()})`, "tokens", panel,
    () => answer.sent),
    tokenRun(items, { width: Math.min(900, panel.clientWidth || 900), out, label: "tokens" }), out,
    h("p", { class: "note" }, "colours: special tokens dark, text pieces middle, byte-fallback pieces light; "
      + "hover or focus a token for its id and bytes."),
    table(["#", "id", "piece", "text", "kind"], j.tokens.map((t) => [t.index, t.id, show(t.piece),
      show(t.text) + (t.joined ? `  → ${t.joined}` : ""), t.kind]), [0, 1]));
  if (j.rendered !== null && j.rendered !== undefined) {
    panel.append(h("h3", {}, "the chat template's text"), h("pre", { class: "rendered" }, j.rendered));
  }
}

function table(header, rows, numeric = []) {
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, header.map((x, i) => h("th", { class: numeric.includes(i) ? "num" : "" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((x, i) => h("td", {
      class: numeric.includes(i) ? "num" : i === 1 || i === 2 ? "tok" : "" }, x)))))));
}

// ---- next token, with the sampling controls

export async function nextToken(panel, answer, ctx) {
  const j = answer.record;
  const controls = h("div", { class: "controls", role: "group", "aria-label": "sampling controls" });
  const q = ctx.query;
  const init = { temperature: num(q.get("temperature"), 1), top_k: num(q.get("sampler_top_k"), 0),
    top_p: num(q.get("top_p"), 1), min_p: num(q.get("min_p"), 0) };
  const inputs = {};
  const slider = (name, label, min, max, step, key = name) => {
    const input = h("input", { type: "range", min, max, step, value: init[name], id: `c-${name}`, name: key });
    const output = h("output", { for: `c-${name}` }, String(init[name]));
    inputs[name] = { input, output };
    controls.append(h("label", {}, label, input, output));
  };
  slider("temperature", "temperature", 0, 2, 0.01);
  slider("top_k", "top-k (0: off)", 0, Math.min(100, j.top.length > 0 ? 100 : 0), 1, "sampler_top_k");
  slider("top_p", "top-p", 0.01, 1, 0.01);
  slider("min_p", "min-p", 0, 1, 0.01);
  const tbody = h("tbody");
  const rows = j.top.map((c) => {
    const raw = h("td", { class: "num", "data-prob": c.prob }, prob(c.prob));
    const tem = h("td", { class: "num tempered" });
    const rawBar = h("span", { class: "bar" });
    rawBar.style.width = `${Math.round(120 * c.prob)}px`;
    const temBar = h("span", { class: "bar t" });
    const tr = h("tr", { "data-id": c.id }, h("td", { class: "num" }, c.rank), h("td", { class: "tok" }, show(c.token)),
      h("td", { class: "num" }, c.id), h("td", { class: "num" }, c.logit === null || c.logit === undefined ? "–"
        : c.logit.toFixed(3)), raw, h("td", { class: "barcell" }, rawBar), tem,
      h("td", { class: "barcell" }, temBar));
    tbody.append(tr);
    return { c, tem, temBar };
  });
  const tableEl = h("div", { class: "scroll" }, h("table", { id: "next-table" }, h("thead", {}, h("tr", {},
    ["#", "token", "id", "logit", "prob", "", "sampled", ""].map((x, i) => h("th", { class: [0, 2, 3, 4, 6].includes(i)
      ? "num" : x ? "" : "barcell" }, x)))), tbody));
  const chart = h("div", { class: "chart" });
  const note = h("p", { class: "note" });
  panel.append(...head(`Top ${j.top.length} next tokens after ${JSON.stringify(j.prompt)}`, "next-token", panel,
    () => answer.sent),
    chips(j.tokens), h("p", { class: "note" }, j.shapes ? `shapes: ${Object.entries(j.shapes).map(([k, v]) =>
      `${k} [${v.join(", ")}]`).join(" → ")}` : "no shapes from this backend"),
    controls, note, h("div", { class: "row" }, tableEl, chart));
  if (j.temperature !== null && j.temperature !== undefined) {
    panel.append(h("p", { class: "note" }, `The server's probabilities at temperature ${j.temperature} (--temperature): `
      + j.top.map((c) => `${show(c.token)} ${prob(c.prob_at_temperature)}`).join(", ")));
  }
  ctx.shown();  // the command's rows are on screen; the controls come alive once the whole distribution is here
  // The whole distribution, for the controls: the same route with top_k = the vocabulary.
  const vocab = j.shapes && j.shapes.logits ? j.shapes.logits[j.shapes.logits.length - 1] : null;
  let logits = null, index = new Map();
  if (vocab) {
    note.textContent = "reading the whole distribution for the controls…";
    const all = (await view("next-token", { ...ctx.body, top_k: vocab, temperature: null })).record;
    logits = all.top.map((c) => c.logit);  // a masked token's -Infinity is back (api.js), so it keeps no mass
    all.top.forEach((c, i) => index.set(c.id, i));
  }
  function redraw() {
    const t0 = performance.now();
    const params = {};
    for (const [k, { input, output }] of Object.entries(inputs)) {
      params[k] = Number(input.value);
      output.value = input.value;
      output.textContent = input.value;
    }
    if (!logits) {
      note.textContent = "this backend gives no logits: the controls cannot redraw";
      return;
    }
    const p = distribution(logits, params);
    for (const r of rows) {
      const v = p[index.get(r.c.id)];
      r.tem.textContent = prob(v);
      r.tem.dataset.prob = String(v);
      r.temBar.style.width = `${Math.round(120 * v)}px`;
    }
    chart.replaceChildren(bars(j.top.map((c, i) => ({ label: show(c.token), values: [c.prob, p[index.get(c.id)]] })),
      { series: [{ name: "raw (T = 1)", cls: "raw" }, { name: "sampled with the controls", cls: "tempered" }] }));
    let kept = 0;
    for (const v of p) if (v > 0) kept++;
    note.textContent = `sampled: temperature ${params.temperature}, top-k ${params.top_k || "off"}, top-p ${params.top_p}, `
      + `min-p ${params.min_p}: ${kept.toLocaleString()} of ${logits.length.toLocaleString()} tokens can be drawn `
      + "(redrawn here from the logits with the core's formula)";
    const ms = performance.now() - t0;
    timings.redrawMs.push(ms);
    timings.lastRedrawMs = ms;
    panel.dataset.redraws = String(timings.redrawMs.length);
  }
  for (const [name, { input }] of Object.entries(inputs)) {
    input.addEventListener("input", () => {
      redraw();
      ctx.remember({ [input.name]: input.value === String(dflt(name)) ? null : input.value });
    });
  }
  redraw();
}

function num(v, fallback) {
  return v === null || v === "" || !Number.isFinite(Number(v)) ? fallback : Number(v);
}

function dflt(name) {
  return { temperature: 1, top_k: 0, top_p: 1, min_p: 0 }[name];
}

// ---- the forward pass, as the chapter draws it

export function forward(panel, answer) {
  const j = answer.record;
  const W = 620, boxH = 30, gap = 10;
  const items = [];
  const shape = (x) => `[${x.join(", ")}]`;
  items.push({ kind: "box", name: "tokenizer", type: JSON.stringify(j.prompt).slice(0, 40), shape: shape(j.input_shape) });
  for (const st of j.before) items.push({ kind: "box", name: st.path, type: st.kind, shape: shape(st.output_shape) });
  for (const b of j.blocks) {
    items.push({ kind: "open", name: `blocks ${b.first}–${b.last} (×${b.count}), each:`, n: b.stages.length });
    for (const st of b.stages) items.push({ kind: "stage", name: st.path || "(the block)", type: st.kind,
      shape: `${shape(st.input_shape)} → ${shape(st.output_shape)}` });
  }
  for (const st of j.after) items.push({ kind: "box", name: st.path, type: st.kind, shape: shape(st.output_shape) });
  items.push({ kind: "box", name: "logits", type: "next-token scores at every position",
    shape: shape(j.after.at(-1).output_shape) });
  let y = 8;
  const svg = s("svg", { class: "forward picture", role: "img", "aria-label": "the forward pass, stage by stage" });
  let groupTop = null, groupLeft = 0;
  items.forEach((it, i) => {
    if (it.kind === "open") {
      groupTop = y;
      svg.append(s("text", { x: 24, y: y + 14, class: "small", text: it.name }));
      y += 22;
      groupLeft = it.n;
      return;
    }
    const x = it.kind === "stage" ? 30 : 10, w = it.kind === "stage" ? W - 50 : W - 20;
    svg.append(s("rect", { x, y, width: w, height: boxH, rx: 4, class: "box" }),
      s("text", { x: x + 8, y: y + 19, class: "mono", text: it.name }),
      s("text", { x: x + 200, y: y + 19, class: "small", text: it.type }),
      s("text", { x: x + w - 8, y: y + 19, "text-anchor": "end", class: "mono", text: it.shape }));
    y += boxH + (it.kind === "stage" ? 4 : gap);
    if (it.kind === "stage" && --groupLeft === 0) {
      svg.append(s("rect", { x: 18, y: groupTop - 2, width: W - 30, height: y - groupTop + 2, rx: 6, class: "group" }));
      y += gap;
    }
    if (i < items.length - 1 && it.kind === "box") {
      svg.append(s("line", { x1: W / 2, y1: y - gap, x2: W / 2, y2: y, class: "axis" }));
    }
  });
  svg.setAttribute("width", W);
  svg.setAttribute("height", y + 4);
  svg.setAttribute("viewBox", `0 0 ${W} ${y + 4}`);
  panel.append(...head(`The forward pass of ${JSON.stringify(j.prompt)}`, "forward", panel, () => answer.sent),
    chips(j.tokens), h("div", { class: "scroll" }, svg),
    h("p", { class: "note" }, `attention: ${j.heads} query heads, ${j.kv_heads} key/value heads of ${j.head_dim}; `
      + Object.entries(j.head_shapes).map(([k, v]) => `${k} ${shape(v)}`).join(", ")));
}

// ---- attention

export function attention(panel, answer, ctx) {
  const j = answer.record;
  const window = j.sliding_window || null;
  const labels = j.tokens.map((t, i) => `${i} ${show(t.piece)}`);
  const masked = (q, k) => k > q || (window !== null && q - k >= window);
  const heads = Object.keys(j.weights).map(Number);
  const out = readout();
  const big = h("div", { id: "enlarged" });
  const summaries = new Map((j.summaries || []).map((x) => [x.head, x]));
  const say = (hd) => (q, k) => `head ${hd}: query ${labels[q]} → key ${labels[k]}: weight ${j.weights[hd][q][k].toFixed(4)}`;
  function enlarge(hd) {
    for (const b of panel.querySelectorAll(".head")) b.setAttribute("aria-pressed", String(Number(b.dataset.head) === hd));
    big.dataset.head = String(hd);
    const sm = summaries.get(hd);
    big.replaceChildren(h("h3", {}, `layer ${j.layer}, head ${hd}` + (sm ? `: entropy ${sm.entropy.toFixed(2)} bits `
      + `(uniform ${j.uniform_entropy.toFixed(2)}), first token ${sm.first_token.toFixed(2)}, previous token ${sm.previous_token.toFixed(2)}, self ${sm.self_token.toFixed(2)}`
      : "")),
    h("div", { class: "scroll" }, heatmap({ matrix: j.weights[hd], rows: labels, cols: labels, t: (v) => v,
      cell: say(hd), masked, size: Math.max(22, Math.min(44, Math.floor(560 / labels.length))), out,
      title: `attention of layer ${j.layer} head ${hd}`, text: (v) => (labels.length <= 12 ? v.toFixed(2) : "") })),
    out, legend(0, 1, "attention weight"),
    h("p", { class: "note" }, `rows: queries; columns: keys; dotted: masked (causal${window ? `, and the sliding window of ${window}` : ""}).`));
  }
  const small = h("div", { class: "heads" }, heads.map((hd) => {
    const b = h("button", { type: "button", class: "head", "data-head": hd, "aria-pressed": "false",
      "aria-label": `enlarge head ${hd}`, onclick: () => enlarge(hd) },
    heatmap({ matrix: j.weights[hd], rows: labels, cols: labels, t: (v) => v, cell: say(hd), masked, labels: false, picture: false,
      size: Math.max(4, Math.floor(120 / labels.length)), title: `head ${hd}` }), h("p", {}, `head ${hd}`));
    return b;
  }));
  const layers = h("div", { class: "save layers", role: "group", "aria-label": "layer" }, "layer ",
    Array.from({ length: j.layers }, (_, l) => h("button", { type: "button", "aria-pressed": String(l === j.layer),
      onclick: () => ctx.go({ layer: l, head: null }) }, String(l))));
  panel.append(...head(`Attention of layer ${j.layer} of ${j.layers} (${j.heads} heads, ${j.kv_heads} key/value heads, `
    + `${j.attention})`, "attention", panel, () => answer.sent), layers,
  h("p", { class: "note" }, "click a head (or Tab to it and press Enter) to enlarge it; hover a cell for its tokens and weight."),
  small, big);
  enlarge(j.head !== null && j.head !== undefined ? j.head : heads[0]);
}

// ---- the logit lens

export function lens(panel, answer, ctx) {
  const j = answer.record;
  const out = readout();
  panel.append(...head(`The logit lens at position ${j.position} of ${JSON.stringify(j.prompt)}`, "lens", panel,
    () => answer.sent),
    chips(j.tokens));
  if (j.grid) {
    const positions = j.tokens.map((t, i) => `${i} ${show(t.piece)}`);
    const rows = j.grid.map((_, l) => `layer ${l}`);
    panel.append(h("h3", {}, "each layer's top token at every position (layers × positions); click a column to read it below"),
      h("div", { class: "scroll" }, heatmap({ matrix: j.grid.map((r) => r.map((c) => c.prob)), rows, cols: positions,
        t: (v) => v, size: 64, out, title: "logit lens grid", onCell: (_, p) => ctx.go({ position: p }),
        cell: (l, p) => `layer ${l}, position ${positions[p]}: top ${JSON.stringify(j.grid[l][p].token)} ${prob(j.grid[l][p].prob)}`,
        text: (v, l, p) => show(j.grid[l][p].token).slice(0, 8) })), out, legend(0, 1, "top token's probability"));
  }
  const k = j.rows[0].top.length;
  panel.append(h("h3", {}, `position ${j.position}: each layer's top ${k}` + (j.answer ? `; the answer ${show(j.answer.token)} `
    + `(${prob(j.answer.prob)}) is top from layer ${j.first_top1} and settled from layer ${j.settled}` : "")),
  table(["layer", ...Array.from({ length: k }, (_, i) => `#${i + 1}`), "answer prob", "rank"], j.rows.map((L) => [
    L.layer, ...L.top.map((c) => `${show(c.token)} ${prob(c.prob)}`), prob(L.answer_prob), L.answer_rank]), [0]));
}

// ---- interventions

export function ablate(panel, answer) {
  const j = answer.record;
  const out = readout();
  panel.append(...head(`Ablation (${j.mode}) of ${JSON.stringify(j.prompt)}`, "ablate", panel, () => answer.sent),
    chips(j.tokens), h("p", {}, `unablated top token ${show(j.top.token)} at ${prob(j.top.prob)}`));
  if (j.grid) {
    const g = j.grid, m = g.values;
    const [lo, hi] = extent(m);
    panel.append(h("h3", {}, `P(${show(j.top.token)}) with each ${j.sweep === "heads" ? "head" : "layer's part"} removed`),
      h("div", { class: "scroll" }, heatmap({ matrix: m, rows: g.rows, cols: g.columns, t: range(lo, hi), size: 56,
        out, title: "ablation sweep", cell: (r, c) => `${g.rows[r]}, ${g.columns[c]} removed: P(${show(j.top.token)}) = `
          + `${prob(m[r][c])} (${(m[r][c] - j.top.prob >= 0 ? "+" : "")}${(m[r][c] - j.top.prob).toFixed(4)})`,
        text: brief })), out, legend(prob(lo), prob(hi), `P(${show(j.top.token)})`));
  }
  if (j.shift) shiftTables(panel, j.shift, "before", "after");
}

function shiftTables(panel, shift, a, b) {
  const { before, after } = shift;
  panel.append(h("div", { class: "row" },
    h("div", {}, h("h3", {}, a), table(["#", "token", "prob"], before.map((c) => [c.rank, show(c.token), prob(c.prob)]), [0, 2])),
    h("div", {}, h("h3", {}, b), table(["#", "token", "prob"], after.map((c) => [c.rank, show(c.token), prob(c.prob)]), [0, 2]))),
  h("p", { class: "note", "data-role": "shift" }, `KL(before ‖ after) = ${shift.kl !== null ? `${shift.kl.toFixed(4)} nats`
    : `none (${shift.kl_note})`}; ${show(before[0].token)} ${prob(before[0].prob)} → ${prob(shift.top_after_prob)} `
    + `(${shift.change >= 0 ? "+" : ""}${shift.change.toFixed(4)}), rank 1 → ${shift.top_after_rank}`));
}

export function patch(panel, answer) {
  const j = answer.record;
  const out = readout();
  const positions = j.tokens.map((t, i) => `${i} ${show(t.piece)}`);
  const layers = j.layer_names;  // what each row of `prob` is (for resid, row 0 is the embeddings' output)
  const [lo, hi] = extent(j.prob);
  panel.append(...head(`Patching ${j.part}: clean ${JSON.stringify(j.clean)} into corrupt ${JSON.stringify(j.corrupt)}`,
    "patch", panel, () => answer.sent),
  h("p", {}, `P(${show(j.target.token)}): clean ${prob(j.clean_prob)}, corrupt ${prob(j.corrupt_prob)}; each cell: the `
    + "corrupt run with the clean run's activation at that layer and position put back."),
  h("div", { class: "scroll" }, heatmap({ matrix: j.prob, rows: layers, cols: positions, t: range(lo, hi), size: 52, out,
    title: "activation patching", text: brief,
    cell: (l, p) => `${layers[l]}, position ${positions[p]} patched: P(${show(j.target.token)}) = ${prob(j.prob[l][p])}` })),
  out, legend(prob(lo), prob(hi), `P(${show(j.target.token)})`));
}

export function steer(panel, answer) {
  const j = answer.record;
  panel.append(...head(`Steering at layer ${j.layer}: +${JSON.stringify(j.add)}${j.subtract ? ` −${JSON.stringify(j.subtract)}`
    : ""}, alpha ${j.alpha}`, "steer", panel, () => answer.sent),
  h("p", { class: "note" }, `the direction's norm ${j.norm.toFixed(2)}; the prompt ${JSON.stringify(j.prompt)}`),
  h("div", { class: "row" }, h("div", {}, h("h3", {}, "unsteered"), h("pre", { class: "rendered", "data-role": "unsteered" }, j.unsteered)),
    h("div", {}, h("h3", {}, "steered"), h("pre", { class: "rendered", "data-role": "steered" }, j.steered))));
  if (j.shift) {
    const ids = new Map();
    for (const c of [...j.shift.before, ...j.shift.after]) ids.set(c.id, c.token);
    const pa = new Map(j.shift.after.map((c) => [c.id, c.prob]));
    const pb = new Map(j.shift.before.map((c) => [c.id, c.prob]));
    panel.append(h("h3", {}, "the next token's distribution, before and after"),
      bars([...ids].slice(0, 14).map(([id, tok]) => ({ label: show(tok), values: [pb.get(id) ?? 0, pa.get(id) ?? 0] })),
        { series: [{ name: "unsteered", cls: "raw" }, { name: "steered", cls: "tempered" }] }),
      h("p", { class: "note" }, "a token outside one side's top list is drawn at 0 there."));
    shiftTables(panel, j.shift, "unsteered", "steered");
  }
}

// ---- decoding: greedy against sampled

async function runners(steps) {
  const texts = await pieces(steps.flatMap((st) => st.top.map(([id]) => id)));
  let i = 0;
  return steps.map((st) => st.top.map(([, p]) => `${JSON.stringify(texts[i++])} ${prob(p)}`).join(", "));
}

export async function compare(panel, answer, ctx) {
  const j = answer.record;
  if (ctx.body.params === undefined || ctx.body.params.seed === undefined) ctx.remember({ seed: j.params.seed });
  const out = readout();
  const wide = (panel.clientWidth || 1100) >= 900;  // side by side on a wide screen, one under another on a phone
  const w = wide ? 380 : Math.min(900, (panel.clientWidth || 390) - 10);
  const columns = h("div", { class: "row" });
  const runs = [["greedy", j.greedy, null],
    ...j.samples.map((g, i) => [`sample ${i + 1} (seed ${j.seeds[i]})`, g, j.departs_at[i]])];
  const settings = { ...j.params, max_new_tokens: j.settings.max_new_tokens, samples: j.samples.length };
  panel.append(...head(`Greedy against sampled: ${JSON.stringify(j.prompt)}`, "compare", panel, () => answer.sent),
    h("p", { class: "note" }, `sampling: ${Object.entries(settings).map(([k, v]) => `${k} ${v}`).join(", ")}. `
      + "Each token is coloured by its probability under the raw distribution; hover or focus it for its rank and runners-up. "
      + "A sample's first token that differs from greedy is outlined."));
  for (const [name, gen, at] of runs) {
    const why = await runners(gen.steps);
    const items = gen.steps.map((st, i) => ({ text: st.text, t: st.prob, prob: st.prob, mark: at === i,
      say: `${name}, token ${i}: ${JSON.stringify(st.text)} (id ${st.token_id}) p ${prob(st.prob)} rank ${st.rank}; runners-up: ${why[i]}` }));
    columns.append(h("div", {}, h("h3", {}, name), h("p", { class: "note" }, `perplexity ${gen.perplexity.toFixed(3)}, `
      + `${gen.steps.length} tokens, ${gen.finish}`), tokenRun(items, { width: w, out, label: name })));
  }
  panel.append(columns, out, legend(0, 1, "probability of the token"));
}

// ---- the architecture card

export function inspect(panel, answer) {
  const j = answer.record.card;
  const fields = Object.entries(j);
  if (answer.record.quantized) fields.push(["quantized", answer.record.quantized]);  // with `quantize`: that footprint
  const plain = fields.filter(([, v]) => v === null || typeof v !== "object");
  const nested = fields.filter(([, v]) => v !== null && typeof v === "object");
  const tree = (m) => h("details", { open: m.name === "" || m.name === "model" || m.name === "layers" },
    h("summary", {}, `${m.name || "(model)"}: ${m.kind}${m.repeat > 1 ? ` ×${m.repeat}` : ""} · `
      + `${m.parameters.toLocaleString()} parameters${m.detail ? ` (${m.detail})` : ""}`), ...m.children.map(tree));
  const value = (v) => (v === null ? "–" : Number.isInteger(v) ? v.toLocaleString() : String(v));
  panel.append(...head(`${j.architecture} (${j.model})`, "inspect", panel, () => answer.sent), card(j),
    h("div", { class: "row" }, table(["field", "value"], [...plain.map(([k, v]) => [k, value(v)]),
      ...nested.map(([k, v]) => [k, Object.entries(v).map(([a, b]) => `${a} ${value(b)}`).join(", ")])]),
    h("div", {}, h("h3", {}, "module tree"), tree(answer.record.tree))));
}

/** The architecture as the chapter draws it: embeddings, N blocks (attention and feed-forward), norm, LM head. */
function card(j) {
  const W = 560, rows = [
    ["embed_tokens", `${j.vocab_size.toLocaleString()} × ${j.hidden_size}`, 0],
    [`attention (${j.attention})`, `${j.heads} heads, ${j.kv_heads} key/value heads of ${j.head_dim}, ${j.positions}`, 1],
    [`feed-forward (${j.ffn})`, `${j.hidden_size} → ${j.intermediate_size} → ${j.hidden_size}, ${j.activation}`, 1],
    [`norm (${j.norm})`, `${j.hidden_size}`, 0],
    ["lm_head", `${j.hidden_size} × ${j.vocab_size.toLocaleString()}${j.tied_embeddings ? " (tied)" : ""}`, 0]];
  const svg = s("svg", { width: W, height: rows.length * 40 + 40, viewBox: `0 0 ${W} ${rows.length * 40 + 40}`,
    class: "picture", role: "img", "aria-label": "the architecture" });
  rows.forEach(([name, what, inBlock], i) => {
    const y = 8 + i * 40 + (i > 2 ? 20 : i > 0 ? 10 : 0);
    svg.append(s("rect", { x: inBlock ? 30 : 10, y, width: inBlock ? W - 50 : W - 20, height: 30, rx: 4, class: "box" }),
      s("text", { x: inBlock ? 40 : 20, y: y + 19, class: "mono", text: name }),
      s("text", { x: inBlock ? W - 30 : W - 20, y: y + 19, "text-anchor": "end", class: "small", text: what }));
  });
  svg.append(s("rect", { x: 20, y: 44, width: W - 30, height: 92, rx: 6, class: "group" }),
    s("text", { x: W - 20, y: 55, "text-anchor": "end", class: "small", text: `× ${j.layers} blocks` }));
  return svg;
}

// ---- page-only panels: the bench's per-position chart, and a streamed chat

export const PAGE_FIELDS = {
  bench: { prompt: { kind: "text", default: "The capital of France is", help: "The prompt." },
    max_new_tokens: { kind: "int", default: 48, help: "Tokens to generate (always that many: ignore_eos)." } },
  chat: { prompt: { kind: "text", default: "", help: "Your message." },
    temperature: { kind: "float", default: 0.7, help: "Sampling temperature (0: greedy)." },
    seed: { kind: "int", optional: true, help: "Seed for sampling." },
    max_tokens: { kind: "int", default: 64, help: "The most tokens in a reply." } },
};

export async function bench(panel, _answer, ctx) {
  const n = Number(ctx.body.max_new_tokens ?? 48);
  const modes = ["dynamic", "none"];
  const series = [];
  for (const cache of modes) {
    const { record } = await view("compare", { prompt: ctx.body.prompt ?? "The capital of France is", samples: 1,
      params: { temperature: 0.0001, seed: 0 }, settings: { max_new_tokens: n, cache, ignore_eos: true } });
    const run = record.greedy;
    series.push({ cache, ms: run.steps.map((st) => 1000 * st.seconds), ttftMs: 1000 * run.ttft_s });
  }
  const W = 640, H = 270, L = 50, B = 30;
  const decode = series.flatMap((x) => x.ms.slice(1));
  const top = Math.max(...decode) * 1.1;
  const X = (i) => L + ((W - L - 10) * (i - 1)) / Math.max(1, n - 1);
  const Y = (v) => H - B - ((H - B - 24) * Math.min(v, top)) / top;
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", class: "picture",
    "aria-label": "per-position step time" },
    s("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, class: "axis" }), s("line", { x1: L, y1: 24, x2: L, y2: H - B, class: "axis" }),
    s("text", { x: L - 4, y: 30, "text-anchor": "end", class: "small", text: `${top.toFixed(1)}` }),
    s("text", { x: L - 4, y: H - B, "text-anchor": "end", class: "small", text: "0" }),
    s("text", { x: W / 2, y: H - 6, "text-anchor": "middle", class: "small", text: "position of the new token" }),
    s("text", { x: 12, y: H / 2, class: "small", transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle", text: "ms per token" }));
  svg.append(s("text", { x: L, y: H - B + 14, "text-anchor": "middle", class: "small", text: "1" }),
    s("text", { x: W - 10, y: H - B + 14, "text-anchor": "middle", class: "small", text: String(n - 1) }));
  series.forEach((x, k) => {
    const pts = x.ms.slice(1).map((v, i) => `${X(i + 1).toFixed(1)},${Y(v).toFixed(1)}`).join(" ");
    svg.append(s("polyline", { points: pts, class: k ? "line-b" : "line-a" }),
      s("line", { x1: L + 20 + 170 * k, y1: 8, x2: L + 50 + 170 * k, y2: 8, class: k ? "line-b" : "line-a" }),
      s("text", { x: L + 56 + 170 * k, y: 12, class: "small", text: `cache ${x.cache}` }));
  });
  const median = (a) => { const b = [...a].sort((p, q) => p - q); return b[Math.floor(b.length / 2)]; };
  panel.append(...head(`Step time per position, ${n} new tokens`, "bench", panel, () => ({ prompt: ctx.body.prompt, series })), svg,
    h("p", { class: "note" }, series.map((x) => `cache ${x.cache}: first token (with the prefill) ${x.ttftMs.toFixed(1)} ms, `
      + `then median ${median(x.ms.slice(1)).toFixed(2)} ms per token`).join("; ") + ". The times are the server's, device-"
      + "synchronised, from the one token loop (the compare view's record); `llm bench` times the same loop with warm-up and repeats."));
}

export async function chat(panel, _answer, ctx) {
  const log = ctx.chatLog;
  const out = readout();
  const view = h("div", { class: "chat-log", role: "log", "aria-label": "conversation" });
  const width = () => Math.min(900, (view.clientWidth || 900) - 20);
  const draw = () => view.replaceChildren(...log.map((m) => h("div", { class: "turn" }, h("b", {}, m.role),
    m.tokens ? tokenRun(m.tokens.map((t) => ({ text: t.token, t: Math.exp(t.logprob), prob: Math.exp(t.logprob), say: t.say })),
      { width: width(), out, label: "the reply" }) : h("span", { class: "ct" }, m.content))));
  panel.append(...head("Chat (streamed, each token coloured by its probability)", "chat", panel, () => log), view, out,
    legend(0, 1, "probability of the token"), h("p", { class: "note" }, "type a message above and press Run; the conversation "
      + "stays in this page. Probabilities are the raw distribution's (temperature 1), as the server's logprobs give them."));
  draw();
  const text = ctx.body.prompt;
  if (!text) return;
  ctx.remember({ prompt: null });  // a reload shows the conversation's start, not the message sent again
  log.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "", tokens: [] };
  log.push(reply);
  const body = { messages: log.slice(0, -1).map((m) => ({ role: m.role, content: m.content })), stream: true, logprobs: true,
    top_logprobs: 5, max_tokens: Number(ctx.body.max_tokens ?? 64), temperature: Number(ctx.body.temperature ?? 0.7) };
  if (ctx.body.seed !== undefined) body.seed = Number(ctx.body.seed);
  for await (const chunk of stream("/v1/chat/completions", body)) {
    const choice = chunk.choices && chunk.choices[0];
    if (!choice) continue;
    for (const t of (choice.logprobs && choice.logprobs.content) || []) {
      reply.tokens.push({ token: t.token, logprob: t.logprob, say: `${JSON.stringify(t.token)} p ${prob(Math.exp(t.logprob))}; `
        + `runners-up: ${(t.top_logprobs || []).map((x) => `${JSON.stringify(x.token)} ${prob(Math.exp(x.logprob))}`).join(", ")}` });
    }
    reply.content += (choice.delta && choice.delta.content) || "";
    draw();
  }
}
