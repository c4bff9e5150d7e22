"""Ablation and patching on the tiny model, by lookinside and by TransformerLens's TransformerBridge, compared.

Run: PYTHONPATH=src python scripts/compare_transformerlens.py [--tolerance 1e-4]
TransformerLens (pip install transformer-lens) loads the tiny model's directory with its own hooks
(hook_z for heads, hook_attn_out / hook_mlp_out for sublayers, hook_resid_pre / hook_resid_post for the
stream). Every number the two compute is compared: the head sweep and layer sweep grids (zero and mean),
one multi-head ablation's next-token distribution, and the patching grids of the residual stream,
attention and MLP outputs. It prints the largest absolute difference of each and exits 1 when one is
above --tolerance; without TransformerLens it says so and exits 0 (skipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable

CLEAN, CORRUPT = "The capital of France is", "The capital of Japan is"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if importlib.util.find_spec("transformer_lens") is None:
        print("skipped: transformer-lens is not installed (pip install transformer-lens)")
        return 0

    import torch
    import transformer_lens

    from lookinside import api as li
    from lookinside.tiny import ASSETS

    started = time.perf_counter()
    lm = li.load("tiny", device="cpu")
    bridge = transformer_lens.TransformerBridge.boot_transformers(str(ASSETS), device="cpu")
    bridge.eval()
    print(f"TransformerLens {importlib.metadata.version('transformer-lens')} TransformerBridge "
          f"(attention: eager) against lookinside (attention: {lm.attn_implementation}), tiny model, float32, CPU")
    layers, heads = lm.config.num_hidden_layers, lm.config.num_attention_heads
    clean = bridge.to_tokens(CLEAN)
    corrupt = bridge.to_tokens(CORRUPT)
    assert clean.tolist()[0] == lm.tokenizer(CLEAN).input_ids, "the two tokenize differently"

    def tl_probs(tokens: torch.Tensor, hooks: list[tuple[str, Callable]] = ()) -> torch.Tensor:  # type: ignore[assignment]
        with torch.inference_mode():
            logits = bridge.run_with_hooks(tokens, fwd_hooks=list(hooks))
        return torch.softmax(logits[0, -1].float(), -1)  # (vocab,)

    def ablate(mode: str, heads_: list[int] | None = None) -> Callable:
        def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
            x = x.clone()
            picked = x[..., heads_, :] if heads_ is not None else x  # hook_z: (batch, n, heads, d_head)
            value = torch.zeros_like(picked) if mode == "zero" else picked.mean(1, keepdim=True).expand_as(picked)
            if heads_ is not None:
                x[..., heads_, :] = value
                return x
            return value.clone()

        return hook

    results: list[tuple[str, float]] = []
    base = tl_probs(clean)
    ours = li.next_token(lm, CLEAN, top_k=1024).top
    results.append(("no intervention: every next-token probability",
                    max(abs(c.prob - float(base[c.id])) for c in ours)))
    top = int(base.argmax())

    for mode in ("zero", "mean"):
        sweep = li.ablate(lm, CLEAN, sweep="heads", mode=mode).grid.values
        theirs = [[float(tl_probs(clean, [(f"blocks.{layer}.attn.hook_z", ablate(mode, [h]))])[top])
                   for h in range(heads)] for layer in range(layers)]
        results.append((f"head sweep, {mode}: p(top) per layer x head", _max_diff(sweep, theirs)))
        sweep = li.ablate(lm, CLEAN, sweep="layers", mode=mode).grid.values
        theirs = []
        for layer in range(layers):
            row = []
            for part in ("attn", "mlp", "block"):
                names = {"attn": ["hook_attn_out"], "mlp": ["hook_mlp_out"]}.get(part, [])
                if part == "block":  # the block's contribution: attention and MLP outputs both removed, in turn
                    row.append(float(_block_ablated(bridge, clean, layer, mode)[top]))
                else:
                    row.append(float(tl_probs(clean, [(f"blocks.{layer}.{names[0]}", ablate(mode))])[top]))
            theirs.append(row)
        results.append((f"layer sweep, {mode}: p(top) per layer x attn/mlp/block", _max_diff(sweep, theirs)))
        single = li.ablate(lm, CLEAN, heads=[(0, 1), (1, 3), (1, 0)], mode=mode, top_k=20).shift.after
        theirs_single = tl_probs(clean, [("blocks.0.attn.hook_z", ablate(mode, [1])),
                                         ("blocks.1.attn.hook_z", ablate(mode, [0, 3]))])
        results.append((f"heads 0.1, 1.0, 1.3 {mode}: top-20 next-token probabilities",
                        max(abs(c.prob - float(theirs_single[c.id])) for c in single)))

    with torch.inference_mode():
        _, cache = bridge.run_with_cache(clean)
    n = clean.shape[1]
    for part, names in (("resid", ["blocks.0.hook_resid_pre", *(f"blocks.{i}.hook_resid_post" for i in range(layers))]),
                        ("attn", [f"blocks.{i}.hook_attn_out" for i in range(layers)]),
                        ("mlp", [f"blocks.{i}.hook_mlp_out" for i in range(layers)])):
        ours_grid = li.patch(lm, CLEAN, CORRUPT, part=part).prob
        theirs = [[float(tl_probs(corrupt, [(name, _patched(cache[name], position))])[top]) for position in range(n)]
                  for name in names]
        results.append((f"patching {part}: p(target) per layer x position", _max_diff(ours_grid, theirs)))

    width = max(len(name) for name, _ in results)
    worst = max(diff for _, diff in results)
    for name, diff in results:
        print(f"  {name:<{width}}  max |difference| {diff:.1e}")
    print(f"largest difference {worst:.1e} (tolerance {args.tolerance:.0e}); {time.perf_counter() - started:.0f} s")
    return 0 if worst <= args.tolerance else 1


def _patched(clean: object, position: int) -> Callable:
    def hook(x, hook):
        x = x.clone()
        x[:, position] = clean[:, position]  # type: ignore[index]
        return x

    return hook


def _block_ablated(bridge: object, tokens: object, layer: int, mode: str) -> object:
    """Block `layer`'s whole contribution removed: its output replaced by its input (zero), or by input + mean."""
    import torch

    kept = {}

    def keep(x, hook):
        kept["in"] = x.clone()
        return x

    def replace(x, hook):
        delta = x - kept["in"]
        return kept["in"] + (torch.zeros_like(delta) if mode == "zero" else delta.mean(1, keepdim=True).expand_as(delta))

    with torch.inference_mode():
        logits = bridge.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", keep),  # type: ignore[attr-defined]
                                                           (f"blocks.{layer}.hook_resid_post", replace)])
    return torch.softmax(logits[0, -1].float(), -1)


def _max_diff(a: object, b: object) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))  # type: ignore[call-overload]


if __name__ == "__main__":
    sys.exit(main())
