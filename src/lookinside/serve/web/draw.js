// Drawing helpers: elements, SVG, a colour-blind-safe scale (viridis), heat maps, bars, token
// runs, numbers formatted as the terminal views format them, and each panel's save buttons.

const SVG_NS = "http://www.w3.org/2000/svg";

// The rules the pictures use, put inside a saved SVG (the page has the same ones in style.css).
const SVG_CSS = `
text { font: 12px system-ui, sans-serif; }
.mono { font: 13px ui-monospace, "DejaVu Sans Mono", monospace; }
.small { font-size: 11px; fill: #333; }
.label { font: 11px ui-monospace, "DejaVu Sans Mono", monospace; fill: #222; }
.celltext { font: 10px ui-monospace, "DejaVu Sans Mono", monospace; }
.masked { fill: #eee; }
.dot { fill: #999; }
.raw { fill: #3b528b; }
.tempered { fill: #5ec962; }
.box { fill: #f4f6fb; stroke: #3b528b; }
.group { fill: none; stroke: #21918c; stroke-dasharray: 5 3; }
.line-a { fill: none; stroke: #3b528b; stroke-width: 2; }
.line-b { fill: none; stroke: #28ae80; stroke-width: 2; stroke-dasharray: 6 3; }
.axis { stroke: #666; }
.mark { stroke: #d62728; stroke-width: 2; }
`;

/** An HTML element with attributes (on* as listeners) and children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, as `h`. */
export function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

/** A probability as the terminal shows it: 0.9995, 9.4e-05 (ui/text.py's fmt_prob). */
export function prob(p) {
  if (p === null || p === undefined) return "–";
  if (p >= 1e-4 || p === 0) return p.toFixed(4);
  const [m, e] = p.toExponential(1).split("e");
  return `${m}e${e[0]}${e.slice(1).padStart(2, "0")}`;
}

/** A token made visible: a leading space as ␣, the SentencePiece ▁ too, a newline as ⏎. */
export function show(token) {
  return String(token).replace(/^[ ▁]/, "␣").replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}

// viridis at nine stops (matplotlib's): dark blue to yellow, readable for the common colour blindnesses
const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]
  .map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));

/** viridis at t in [0, 1]. */
export function colour(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const rgb = VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
  return `rgb(${rgb.join(",")})`;
}

/** Black or white text, whichever reads on colour(t). */
export function ink(t) { return t > 0.55 ? "#111" : "#fff"; }

/** A legend: the scale from `low` to `high`, labelled. */
export function legend(low, high, label) {
  const w = 160, total = w + 14 + 7 * label.length;
  const stops = VIRIDIS.map((_, i) => s("stop", { offset: `${(100 * i) / (VIRIDIS.length - 1)}%`,
    "stop-color": colour(i / (VIRIDIS.length - 1)) }));
  const id = `g${Math.random().toString(36).slice(2, 8)}`;
  return s("svg", { width: total, height: 34, viewBox: `0 0 ${total} 34`, class: "legend", role: "img", "aria-label": `${label}: ${low} to ${high}` },
    s("defs", {}, s("linearGradient", { id }, stops)),
    s("rect", { x: 0, y: 2, width: w, height: 12, fill: `url(#${id})` }),
    s("text", { x: 0, y: 28, class: "small" , text: String(low) }),
    s("text", { x: w, y: 28, "text-anchor": "end", class: "small", text: String(high) }),
    s("text", { x: w + 8, y: 12, class: "small", text: label }));
}

/** The hover readout under a picture: one line saying what the pointer is on. */
export function readout() {
  return h("p", { class: "readout", "aria-live": "polite" }, "\u00a0");
}

/**
 * A heat map: rows x cols of values in `matrix`; t(v) maps a value to [0, 1]; `cell(r, c)` is the
 * text a cell says on hover and focus; `masked(r, c)` greys a cell out (dotted, as the terminal draws it).
 */
export function heatmap({ matrix, rows, cols, t, cell, masked = () => false, size = 28, labels = true,
  onCell = null, out = null, text = null, title = "", picture = true }) {
  const left = labels ? Math.min(140, 12 + 7 * Math.max(0, ...rows.map((r) => String(r).length))) : 2;
  const top = labels ? Math.min(110, 12 + 6 * Math.max(0, ...cols.map((c) => String(c).length))) : 2;
  const width = left + cols.length * size + 4;
  const height = top + rows.length * size + 4;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: picture ? "heatmap picture" : "heatmap",
    role: "img", "aria-label": title });
  if (labels) {
    rows.forEach((r, i) => svg.append(s("text", { x: left - 6, y: top + i * size + size / 2 + 4, "text-anchor": "end",
      class: "label", text: r })));
    cols.forEach((c, j) => svg.append(s("text", { class: "label", "text-anchor": "start",
      transform: `translate(${left + j * size + size / 2 + 4},${top - 6}) rotate(-60)`, text: c })));
  }
  matrix.forEach((row, i) => row.forEach((v, j) => {
    const x = left + j * size, y = top + i * size;
    if (masked(i, j)) {
      svg.append(s("rect", { x, y, width: size - 1, height: size - 1, class: "masked" }));
      svg.append(s("circle", { cx: x + size / 2, cy: y + size / 2, r: 1.2, class: "dot" }));
      return;
    }
    const tv = t(v);
    const say = cell(i, j);
    const rect = s("rect", { x, y, width: size - 1, height: size - 1, fill: colour(tv), class: "cell",
      "data-row": i, "data-col": j, "data-value": v },
    s("title", { text: say }));
    const show = () => { if (out) out.textContent = say; };
    rect.addEventListener("mouseenter", show);
    svg.append(rect);
    if (text) {
      const label = text(v, i, j);
      if (label) svg.append(s("text", { x: x + size / 2, y: y + size / 2 + 4, "text-anchor": "middle",
        class: "celltext", fill: ink(tv), text: label }));
    }
    if (onCell) rect.addEventListener("click", () => onCell(i, j));
  }));
  return svg;
}

/**
 * Tokens as a run of coloured boxes in monospace, wrapped at `width` pixels: each item is
 * {text, t (colour), say (hover line), mark (outlined)}; hovering or focusing a token writes its line to `out`.
 */
export function tokenRun(items, { width = 560, out = null, label = "" } = {}) {
  const cw = 8.4, lh = 24, pad = 4;
  let x = pad, y = pad;
  const nodes = [];
  for (const item of items) {
    const text = show(item.text) || "∅";
    const w = Math.max(cw, text.length * cw) + 4;
    if (x + w > width - pad && x > pad) { x = pad; y += lh + 4; }
    const g = s("g", { class: "tok", tabindex: 0, "data-text": item.text, "data-prob": item.prob },
      s("title", { text: item.say }),
      s("rect", { x, y, width: w, height: lh, rx: 3, fill: colour(item.t), class: item.mark ? "mark" : "" }),
      s("text", { x: x + 2, y: y + lh - 7, fill: ink(item.t), class: "mono", text }));
    const say = () => { if (out) out.textContent = item.say; };
    g.addEventListener("mouseenter", say);
    g.addEventListener("focus", say);
    nodes.push(g);
    x += w + 2;
  }
  const height = y + lh + pad;
  return s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "tokens picture", role: "img",
    "aria-label": label }, nodes);
}

/** Horizontal bars: rows [{label, values: [..]}], each value in [0, 1], one colour per series. */
export function bars(rows, { series, width = 520, barH = 14 } = {}) {
  const left = 130, right = 70, gap = 6;
  const rowH = series.length * (barH + 2) + gap;
  const height = rows.length * rowH + 24;
  const span = width - left - right;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "bars picture", role: "img",
    "aria-label": `bars: ${series.map((x) => x.name).join(", ")}` });
  series.forEach((ser, k) => {
    svg.append(s("rect", { x: left + k * 150, y: 2, width: 12, height: 12, class: ser.cls }));
    svg.append(s("text", { x: left + k * 150 + 16, y: 12, class: "small", text: ser.name }));
  });
  rows.forEach((row, i) => {
    const y0 = 22 + i * rowH;
    svg.append(s("text", { x: left - 6, y: y0 + rowH / 2, "text-anchor": "end", class: "mono", text: row.label }));
    row.values.forEach((v, k) => {
      const y = y0 + k * (barH + 2);
      svg.append(s("rect", { x: left, y, width: Math.max(0.5, span * (v || 0)), height: barH, class: series[k].cls }));
      svg.append(s("text", { x: left + span * (v || 0) + 4, y: y + barH - 3, class: "small", text: prob(v) }));
    });
  });
  return svg;
}

function download(name, blob) {
  const a = h("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function svgText(svg) {
  const copy = svg.cloneNode(true);
  copy.setAttribute("xmlns", SVG_NS);
  // the page's stylesheet does not travel with the file: inline the few rules the pictures use
  const style = s("style", { text: SVG_CSS });
  copy.insertBefore(style, copy.firstChild);
  return new XMLSerializer().serializeToString(copy);
}

/** The panel's picture: its SVGs marked `picture` stacked into one (or its first SVG), with its legend. */
function pictureOf(panel) {
  let parts = [...panel.querySelectorAll("svg.picture, svg.legend")];
  if (!parts.some((p) => p.classList.contains("picture"))) parts = [panel.querySelector("svg:not(.legend)")].filter(Boolean);
  if (!parts.length) return null;
  const sizes = parts.map((p) => [p.width.baseVal.value, p.height.baseVal.value]);
  const width = Math.max(...sizes.map(([w]) => w)), height = sizes.reduce((a, [, hh]) => a + hh + 8, 0);
  const out = s("svg", { width, height, viewBox: `0 0 ${width} ${height}` }, s("rect", { width, height, fill: "#fff" }));
  let y = 0;
  parts.forEach((p, i) => {
    const copy = p.cloneNode(true);
    copy.setAttribute("y", y);
    copy.setAttribute("x", 0);
    out.append(copy);
    y += sizes[i][1] + 8;
  });
  return out;
}

/** The save buttons of a panel: its picture (pictureOf) as SVG or PNG, and `data()` (a view's record) as JSON. */
export function saveBar(name, panel, data) {
  const picture = () => pictureOf(panel);
  return h("div", { class: "save" },
    h("button", { type: "button", onclick: () => { const p = picture(); if (p) download(`${name}.svg`,
      new Blob([svgText(p)], { type: "image/svg+xml" })); } }, "Save SVG"),
    h("button", { type: "button", onclick: () => savePng(name, picture()) }, "Save PNG"),
    h("button", { type: "button", onclick: () => download(`${name}.json`,
      new Blob([JSON.stringify(data(), null, 2)], { type: "application/json" })) }, "Save JSON"));
}

function savePng(name, svg) {
  if (!svg) return;
  const url = URL.createObjectURL(new Blob([svgText(svg)], { type: "image/svg+xml" }));
  const img = new Image();
  img.onload = () => {
    const scale = 2;
    const canvas = h("canvas", { width: svg.getAttribute("width") * scale, height: svg.getAttribute("height") * scale });
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.scale(scale, scale);
    ctx.drawImage(img, 0, 0);
    URL.revokeObjectURL(url);
    canvas.toBlob((blob) => download(`${name}.png`, blob), "image/png");
  };
  img.src = url;
}
