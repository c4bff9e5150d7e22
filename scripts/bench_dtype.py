"""float32 against bfloat16 on this CPU: decode speed, time to first token and memory, alternating runs.

Each cell is a fresh `llm bench --cache --json` process (greedy, exactly N tokens, warm-up
excluded, median of the timed repeats); the two dtypes take turns `--rounds` times so that
drifting load falls on both. Agreement is `llm diff`'s job (docs/diff.md).

    python scripts/bench_dtype.py            # tiny and the Phi-3 shape with 2 layers, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MODELS = {
    "tiny": ["--model", "tiny"],
    "Phi-3 shape, 2 layers": ["--random-weights", "--layers", "2", "--device", "cpu"],
}


def bench(model_args: list[str], dtype: str, tokens: int, threads: int) -> dict:
    """One fresh process's cached run: decode tok/s, TTFT and peak RSS."""
    command = [sys.executable, "-m", "lookinside", "bench", *model_args, "--dtype", dtype, "--cache", "--no-reference",
               "--new-tokens", str(tokens), "--repeat", "3", "--threads", str(threads), "--json"]
    run = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)["runs"][0]
    return {"tok_s": run["decode_tok_s"], "ttft": run["ttft_s"], "rss": run["peak_memory_bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("| model | dtype | decode tokens/s | TTFT | peak RSS |")
    print("|---|---|---:|---:|---:|")
    for label, model_args in MODELS.items():
        cells: dict[str, list[dict]] = {"float32": [], "bfloat16": []}
        for _ in range(args.rounds):
            for dtype in cells:
                cells[dtype].append(bench(model_args, dtype, args.tokens, args.threads))
        for dtype, runs in cells.items():
            rates = [r["tok_s"] for r in runs]
            print(f"| {label} | {dtype} | {statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f}) | "
                  f"{statistics.median(r['ttft'] for r in runs) * 1000:.0f} ms | "
                  f"{statistics.median(r['rss'] for r in runs) / 2**20:.0f} MiB |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
