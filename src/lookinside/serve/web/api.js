// Talking to this page's own server, and only to it: relative URLs, JSON bodies sent as
// application/json, the API key (when the server wants one) asked once and kept in this tab's
// sessionStorage. Every failure becomes one line: the server's own error message. A view's answer
// is its record (core/wire.py's to_wire, what `llm NAME --json` prints), read here once.

const KEY = "lookinside.key";

/** The key dialog: resolves with the key typed, or null when dismissed. */
function askKey(reason) {
  const dialog = document.getElementById("key-dialog");
  const input = dialog.querySelector("input");
  dialog.querySelector(".reason").textContent = reason;
  input.value = "";
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "ok" && input.value ? input.value : null);
    dialog.showModal();
    input.focus();
  });
}

function headers(body) {
  const h = { Accept: "application/json" };
  if (body !== undefined) h["Content-Type"] = "application/json";
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorLine(response) {
  try {
    const data = await response.json();
    if (data && data.error && data.error.message) return data.error.message.split("\n")[0];
  } catch (_) { /* not JSON: say the status */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

let asking = null;  // one key dialog at a time: requests refused together wait for the same answer

/** fetch(path) with the key; on 401 asks for the key once and tries again. */
async function send(path, body, signal) {
  for (let attempt = 0; attempt < 3; attempt++) {
    let response;
    try {
      response = await fetch(path, {
        method: body === undefined ? "GET" : "POST", headers: headers(body), signal,
        body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit", cache: "no-store",
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new Error("the server cannot be reached: is `llm serve` still running?");
    }
    if (response.status !== 401 || attempt === 2) return response;
    const sent = sessionStorage.getItem(KEY);
    if (!asking) {
      asking = askKey(sent ? "That key was refused." : "This server wants its API key.").then((key) => {
        if (key !== null) sessionStorage.setItem(KEY, key);
        asking = null;
        return key;
      });
    }
    const key = sessionStorage.getItem(KEY) !== sent ? sessionStorage.getItem(KEY) : await asking;
    if (key === null) return response;
  }
  throw new Error("unreachable");
}

/** GET or POST JSON; resolves with the answer, rejects with an Error of one line. */
export async function api(path, body, signal) {
  const response = await send(path, body, signal);
  if (!response.ok) throw new Error(await errorLine(response));
  return response.json();
}

// How core/finite.py names a number JSON cannot hold, and its place: `top[0].logit`, `weights.2[5][4]`.
const NON_FINITE = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };
const STEP = /\[(\d+)\]|\.?([^.[]+)/g;  // core/wire.py's _STEP

/** A record as it was before JSON: each null its "nulls" names put back as NaN or ±Infinity (core/wire.py's from_wire). */
export function withNonFinite(record) {
  if (!record || typeof record !== "object" || !record.nulls) return record;
  const { nulls, ...data } = structuredClone(record);
  for (const [place, what] of Object.entries(nulls)) {
    const steps = [...place.matchAll(STEP)].map(([, index, key]) => (index !== undefined ? Number(index) : key));
    const last = steps.pop();
    const parent = steps.reduce((into, step) => (into == null ? into : into[step]), data);
    if (parent != null && Object.hasOwn(NON_FINITE, what) && parent[last] === null) parent[last] = NON_FINITE[what];
  }
  return data;
}

/**
 * A view of this server (POST /lookinside/v1/views/NAME): `record` is the view's record with its non-finite numbers
 * put back, the one thing the panels read; `sent` is the record as the server sent it, strict JSON, which a panel saves.
 */
export async function view(name, body, signal) {
  const answer = await api(`/lookinside/v1/views/${name}`, body, signal);
  return { view: answer.view, record: withNonFinite(answer.record), sent: answer.record };
}

/** A streamed OpenAI route (server-sent events): yields each chunk's JSON. */
export async function* stream(path, body, signal) {
  const response = await send(path, body, signal);
  if (!response.ok) throw new Error(await errorLine(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message.split("\n")[0]);
      yield chunk;
    }
  }
}

/** Each token id's text (a generation's runners-up travel as ids), cached for the page's life. */
const pieceCache = new Map();
export async function pieces(ids) {
  const missing = [...new Set(ids.filter((i) => !pieceCache.has(i)))];
  if (missing.length) {
    const { texts } = await api("/lookinside/v1/web/pieces", { ids: missing });
    missing.forEach((id, i) => pieceCache.set(id, texts[i]));
  }
  return ids.map((i) => pieceCache.get(i));
}
