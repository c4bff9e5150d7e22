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
  const scores = new Float64Array(n);
  for (let i = 0; i < n; i++) scores[i] = temperature === 1 ? logits[i] : (logits[i] - max) / temperature;
  if (top_k > 0 && top_k < n) {  // TopKLogitsWarper: below the k-th largest score is removed
    const kth = Float64Array.from(scores).sort()[n - top_k];
    for (let i = 0; i < n; i++) if (scores[i] < kth) scores[i] = -Infinity;
  }
  if (top_p < 1) {
    // TopPLogitsWarper: in ascending order, drop while the cumulative mass is <= 1 - top_p, never the top
    // token. The cumulative mass is monotonic, so that is every probability up to a threshold (found on
    // a sorted copy: a typed array sorts natively, 20x faster than sorting indices by their scores).
    const probs = softmax(scores);
    const sorted = Float64Array.from(probs).sort();
    let cum = 0, threshold = -1;
    for (let r = 0; r < n - 1; r++) {
      cum += sorted[r];
      if (cum <= 1 - top_p) threshold = sorted[r]; else break;
    }
    for (let i = 0; i < n; i++) if (probs[i] <= threshold && i !== top) scores[i] = -Infinity;
  }
  if (min_p > 0) {  // MinPLogitsWarper: below min_p times the top probability is removed
    const probs = softmax(scores);
    let best = 0;
    for (const p of probs) if (p > best) best = p;
    for (let i = 0; i < n; i++) if (probs[i] < min_p * best && i !== top) scores[i] = -Infinity;
  }
  return softmax(scores);
}
