"""Batched sweeps against the one-pass-per-cell loop: activation patching and the head sweep, in one run.

Run: PYTHONPATH=src python scripts/bench_interventions.py [--repeat 5] [--device cpu]
Models: the built-in tiny model, and Phi-3-mini's shape cut to 2 layers with random weights (built from
the carried config, offline). The two ways alternate within each repeat, so a busy machine slows both
alike; the script prints the load average, the median and minimum of each, and the largest difference
between their results.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable

CLEAN, CORRUPT = "The capital of France is", "The capital of Japan is"
LONG_CLEAN = "In the morning we took the train along the coast, and by noon we reached the capital of France, which is"
LONG_CORRUPT = "In the morning we took the train along the coast, and by noon we reached the capital of Japan, which is"


def timed(fn: Callable[[], object], device: object) -> tuple[float, object]:
    from lookinside.core.decoding.timing import now

    start = now(device)
    result = fn()
    return now(device) - start, result


def compare(name: str, lm: object, batched: Callable[[], object], looped: Callable[[], object],
            grid: Callable[[object], list[list[float]]], repeat: int, cells: int) -> None:
    batched(), looped()  # warm-up: first-call allocations and kernel choices
    fast: list[float] = []
    slow: list[float] = []
    for _ in range(repeat):
        seconds, a = timed(batched, lm.device)  # type: ignore[attr-defined]
        fast.append(seconds)
        seconds, b = timed(looped, lm.device)  # type: ignore[attr-defined]
        slow.append(seconds)
    diff = max(abs(x - y) for ra, rb in zip(grid(a), grid(b)) for x, y in zip(ra, rb))
    f, s = statistics.median(fast), statistics.median(slow)
    print(f"  {name:<34} {cells:>4} cells  batched {f * 1000:8.1f} ms (min {min(fast) * 1000:7.1f})  "
          f"per cell {s * 1000:8.1f} ms (min {min(slow) * 1000:7.1f})  x{s / f:5.1f}  max diff {diff:.1e}")


def bench_model(lm: object, spec: object, repeat: int) -> None:
    """Patching and the head sweep on one model, each on a short and a longer prompt."""
    from lookinside.core.inside.interventions import ablate, patch
    from lookinside.core.inside.interventions.requests import AblateRequest, PatchRequest

    config = lm.config  # type: ignore[attr-defined]
    threads = lm.threads.count if lm.threads else "-"  # type: ignore[attr-defined]
    print(f"{spec.model}{' (random weights, 2 layers)' if spec.random_weights else ''}: "  # type: ignore[attr-defined]
          f"{config.num_hidden_layers} layers x {config.num_attention_heads} heads, d_model {config.hidden_size}, "
          f"{lm.dtype}, {lm.device}, threads {threads}")  # type: ignore[attr-defined]
    for clean, corrupt in ((CLEAN, CORRUPT), (LONG_CLEAN, LONG_CORRUPT)):
        request = PatchRequest(clean, corrupt)
        n = len(lm.tokenizer(corrupt).input_ids)  # type: ignore[attr-defined]
        compare(f"patch, residual stream, {n} tokens", lm, lambda r=request: patch.patch(lm, r),
                lambda r=request: patch.patch(lm, r, batched=False), lambda res: res.prob, repeat,
                (config.num_hidden_layers + 1) * n)
    for prompt in (CLEAN, LONG_CLEAN):
        request = AblateRequest(prompt, sweep="heads")
        n = len(lm.tokenizer(prompt).input_ids)  # type: ignore[attr-defined]
        compare(f"head sweep, zero, {n} tokens", lm, lambda r=request: ablate.ablate(lm, r),
                lambda r=request: ablate.ablate(lm, r, batched=False), lambda res: res.grid.values,
                repeat, config.num_hidden_layers * config.num_attention_heads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec

    specs = [LoadSpec(model="tiny", device=args.device, threads=args.threads),
             LoadSpec(model=DEFAULT_MODEL, device=args.device, random_weights=True, layers=2, threads=args.threads)]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs; "
          f"{args.repeat} repeats, alternating, after one warm-up each")
    for spec in specs:
        bench_model(load(spec), spec, args.repeat)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
