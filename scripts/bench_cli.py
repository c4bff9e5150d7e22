"""Wall time of the CLI's start-up paths: `llm --help`, `import torch`, and `llm next-token` on the tiny model.

Usage: python scripts/bench_cli.py [--runs N]

Each command runs N times as a fresh process; the table gives median, min and max.
The `llm` script next to this Python is used directly (a pyenv shim would add its
own start-up to every number).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

LLM = str(Path(sys.executable).with_name("llm"))
COMMANDS = {
    "llm --help": [LLM, "--help"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python -c 'import transformers'": [sys.executable, "-c", "import transformers"],
    "llm next-token ... --model tiny": [LLM, "next-token", "The capital of France is", "--model", "tiny"],
}


def wall_times(command: list[str], runs: int) -> list[float]:
    """Seconds each of `runs` fresh processes took, after one untimed warm-up run."""
    subprocess.run(command, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Time each command and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"{'command':34} {'median':>8} {'min':>8} {'max':>8}   ({args.runs} runs each)")
    for name, command in COMMANDS.items():
        times = wall_times(command, args.runs)
        print(f"{name:34} {statistics.median(times):8.3f} {min(times):8.3f} {max(times):8.3f}")


if __name__ == "__main__":
    main()
