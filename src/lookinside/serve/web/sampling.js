// The sampled distribution, redrawn in the page from the logits with the core's formula
// (core/decoding/sampling.py's build_processors, transformers' warpers in generate's order):
// shift to the top logit, divide by the temperature, keep the top k, keep the top p, keep what is
// at least min_p of the top, then softmax. temperature 0 is greedy: all of it on the top token.
// tests/test_web.py holds these numbers equal to the core's for the same logits.

/** softmax of `scores` (-Infinity for a removed token), in float64. */
export function softmax(scores) {
  let max = -Infinity;
  for (const s of scores) if (s > max) max = s;
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) { out[i] = Math.exp(scores[i] - max); sum += out[i]; }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** The probabilities `params` ({temperature, top_k, top_p, min_p}) give each token of `logits`. */
export function distribution(logits, params) {
  const n = logits.length;
  const { temperature = 1, top_k = 0, top_p = 1, min_p = 0 } = params;
  let top = 0;
  for (let i = 1; i < n; i++) if (logits[i] > logits[top]) top = i;
  if (temperature === 0) {  // greedy: the core takes the argmax
    const out = new Float64Array(n);
    out[top] = 1;
    return out;
  }
  const max = logits[top];
  let scores = Float64Array.from(logits, (l) => (temperature === 1 ? l : (l - max) / temperature));
  if (top_k > 0 && top_k < n) {  // TopKLogitsWarper: below the k-th largest score is removed
    const kth = Float64Array.from(scores).sort().reverse()[top_k - 1];
    scores = scores.map((s) => (s < kth ? -Infinity : s));
  }
  if (top_p < 1) {  // TopPLogitsWarper: ascending order; drop while the cumulative mass <= 1 - top_p; keep the top one
    const order = [...scores.keys()].sort((a, b) => scores[a] - scores[b]);
    const probs = softmax(order.map((i) => scores[i]));
    let cum = 0;
    for (let r = 0; r < n - 1; r++) {
      cum += probs[r];
      if (cum <= 1 - top_p) scores[order[r]] = -Infinity;
    }
  }
  if (min_p > 0) {  // MinPLogitsWarper: below min_p times the top probability is removed
    const probs = softmax(scores);
    let best = 0;
    for (const p of probs) if (p > best) best = p;
    for (let i = 0; i < n; i++) if (probs[i] < min_p * best && i !== top) scores[i] = -Infinity;
  }
  return softmax(scores);
}
