"""Decode tokens/s of each speed option against its baseline, in one process, taking turns.

Rows: the tiny model eager against `--compile`; the Phi-3-mini shape (2 layers, seeded random
weights saved once, so `--quantize` has real weights to convert) in float32 against `--compile`,
bfloat16 and `--quantize int8`; and each at 1 and 2 threads. Every configuration is loaded once,
warmed up once (compiling, for `--compile`), then timed `--repeat` rounds in turns with the others
of its group, so load that comes and goes hits them alike; a cell is the median over the rounds of
(decode steps / their time), as `llm bench` computes it. Prints Markdown tables and the load average.

    python scripts/bench_speed.py                      # 128 tokens after 32, 5 rounds
    python scripts/bench_speed.py --groups tiny --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import lookinside  # noqa: F401 - first: it sets OpenMP's wait policy before torch loads OpenMP


@dataclass(frozen=True)
class Config:
    """One way to run a model: its load options and whether the step is compiled."""

    label: str
    model: str
    dtype: str = "float32"
    quantize: str | None = None
    compile: bool = False
    threads: int = 1


def groups(phi3: str, cores: int) -> dict[str, list[Config]]:
    """What is compared with what."""
    two = min(2, cores)
    return {
        "tiny": [Config(f"tiny, eager, {n}", "tiny", threads=n) for n in (1, two)]
        + [Config(f"tiny, --compile, {n}", "tiny", compile=True, threads=n) for n in (1, two)],
        "phi3": [
            *[Config(f"Phi-3 shape, float32, {n}", phi3, threads=n) for n in (1, two)],
            *[Config(f"Phi-3 shape, float32 --compile, {n}", phi3, compile=True, threads=n) for n in (1, two)],
            *[Config(f"Phi-3 shape, bfloat16, {n}", phi3, dtype="bfloat16", threads=n) for n in (1, two)],
            *[Config(f"Phi-3 shape, --quantize int8, {n}", phi3, quantize="int8", threads=n) for n in (1, two)],
        ],
    }


def phi3_dir(work: Path) -> str:
    """The Phi-3-mini shape, 2 layers, seeded random float32 weights, saved once."""
    path = work / "phi3-2layers"
    if not (path / "config.json").exists():
        from lookinside.core.model.loading import load
        from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec

        torch.manual_seed(0)
        lm = load(LoadSpec(model=DEFAULT_MODEL, random_weights=True, layers=2, dtype="float32", device="cpu"))
        lm.model.save_pretrained(path)
        lm.tokenizer.save_pretrained(path)
    return str(path)


def main() -> None:
    from transformers.utils import logging

    from lookinside.core.bench.run import bench_prompt_ids, our_loop
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec
    from lookinside.core.request import BenchSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="tiny,phi3")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lookinside-bench-speed")
    args = parser.parse_args()
    logging.disable_progress_bar()
    cores = os.cpu_count() or 1
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {cores} cores; "
          f"{args.tokens} new tokens after {args.prompt_tokens}; median of {args.repeat} rounds taking turns")
    for name in args.groups.split(","):
        configs = groups(phi3_dir(args.work) if name == "phi3" else "", cores)[name]
        runners, firsts, tokens, loaded = {}, {}, {}, {}
        for config in configs:
            key = (config.model, config.dtype, config.quantize)  # one copy of the weights per precision
            if key not in loaded:
                loaded[key] = load(LoadSpec(model=config.model, device="cpu", dtype=config.dtype,
                                            quantize=config.quantize, threads=config.threads))
            lm = loaded[key]
            torch.set_num_threads(config.threads)
            ids = bench_prompt_ids(lm.tokenizer, BenchSettings(prompt_tokens=args.prompt_tokens))
            run = our_loop(lm, ids, "static" if config.compile else "dynamic", args.tokens, config.compile)
            start = time.perf_counter()
            tokens[config] = run().token_ids  # the warm-up: compiling happens here
            firsts[config] = time.perf_counter() - start
            runners[config] = run
        rates: dict[Config, list[float]] = {config: [] for config in configs}
        cpu: dict[Config, list[float]] = {config: [] for config in configs}
        for _ in range(args.repeat):
            for config, run in runners.items():
                torch.set_num_threads(config.threads)
                started = time.process_time()
                steps = run().step_seconds
                # CPU seconds per token over the whole run: on a busy machine the time the process really ran,
                # which wall-clock rates mix with the time it waited for a core (the sum over its threads)
                cpu[config].append((time.process_time() - started) / len(steps))
                rates[config].append((len(steps) - 1) / sum(steps[1:]))
        base = configs[0]
        print(f"\n| {name} | decode tokens/s (min-max) | against {base.label} | CPU ms per token | first run (s) "
              "| same ids |")
        print("|---|---:|---:|---:|---:|---|")
        for config in configs:
            median = statistics.median(rates[config])
            ratio = median / statistics.median(rates[base])
            print(f"| {config.label} | {median:.1f} ({min(rates[config]):.1f}-{max(rates[config]):.1f}) | "
                  f"{ratio:.2f}x | {1e3 * statistics.median(cpu[config]):.2f} | {firsts[config]:.1f} | "
                  f"{'yes' if tokens[config] == tokens[base] else 'no'} |", flush=True)
        del runners, loaded
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
