"""Measure decode tokens/s by CPU thread count, idle and beside one busy process.

Each measurement is a fresh `llm bench --cache --json` process (greedy, exactly N tokens,
warm-up excluded, the median of the timed repeats), so torch's thread pool starts from
scratch every time. "busy" starts one bounded CPU loop in another process first (it
stops by itself after --busy-seconds, and is killed when its row is done), as a laptop
with a browser or a compile running would have.

    python scripts/bench_threads.py            # tiny and the Phi-3 shape, 1/2/all threads, idle and busy
    python scripts/bench_threads.py --quick    # fewer tokens and repeats: about 2 minutes on 2 cores

Prints a Markdown table for docs/benchmarks.md, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

MODELS = {
    "tiny": ["--model", "tiny"],
    "Phi-3 shape, 2 layers": ["--random-weights", "--layers", "2", "--device", "cpu"],
}
BUSY_LOOP = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


@contextmanager
def busy(on: bool, seconds: float) -> Iterator[None]:
    """One process spinning on a core for at most `seconds` while the block runs."""
    loop = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=seconds)]) if on else None
    try:
        yield
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()


def decode_rate(model_args: list[str], threads: int | None, tokens: int, repeat: int) -> float:
    """Median decode tokens/s with the KV cache, from one fresh `llm bench` process."""
    command = [sys.executable, "-m", "lookinside", "bench", *model_args, "--cache", "--no-reference",
               "--new-tokens", str(tokens), "--repeat", str(repeat), "--json"]
    command += ["--threads", str(threads)] if threads else []
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["runs"][0]["decode_tok_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 tokens, 2 repeats: a couple of minutes")
    parser.add_argument("--busy-seconds", type=float, default=300.0)
    args = parser.parse_args()
    tokens, repeat = (32, 2) if args.quick else (100, 3)
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, cores} if cores >= 2 else {1})
    print(f"load average before: {os.getloadavg()[0]:.2f}   cores: {cores}   tokens: {tokens}   repeats: {repeat}",
          file=sys.stderr)
    print("| model | machine | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in counts) + " | default |")
    print("|---|---|" + "---:|" * (len(counts) + 1))
    for label, model_args in MODELS.items():
        for load in ("idle", "one busy process"):
            started = time.perf_counter()
            with busy(load != "idle", args.busy_seconds):
                rates = [decode_rate(model_args, n, tokens, repeat) for n in counts]
                default = decode_rate(model_args, None, tokens, repeat)
            cells = " | ".join(f"{r:.1f}" for r in [*rates, default])
            print(f"| {label} | {load} | {cells} |", flush=True)
            print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
