"""The CPU's memory bandwidth, measured once and kept, for the speed-of-light line of `llm bench` on the CPU.

A GPU's bandwidth comes from its datasheet (core/model/hardware.py); a CPU's depends on its memory, its
channels and how many threads read, so it is measured: a STREAM-style triad (a = b + s * c) in torch
over arrays far larger than the caches, best of a few, with torch's current thread count. The result
is cached in the data directory (`cpu-bandwidth.json`), keyed by the CPU's name and the thread count,
so the measurement (well under a second) runs once per machine and thread count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lookinside.core.paths import data_dir

ARRAY_BYTES = 256 * 2**20  # per array: far past any last-level cache
REPEATS = 5
CACHE_FILE = "cpu-bandwidth.json"


@dataclass(frozen=True)
class Measured:
    """A triad's bandwidth in decimal GB/s, for one CPU at one thread count."""

    gbs: float
    cpu: str
    threads: int
    array_bytes: int

    def source(self, cached: bool) -> str:
        """`measured: triad, 2 threads, 256 MiB arrays (cached)`, for the speed-of-light line."""
        return (f"measured: triad, {self.threads} thread{'s' * (self.threads != 1)}, "
                f"{self.array_bytes // 2**20} MiB arrays{' (cached)' if cached else ''}")


def triad_gbs(array_bytes: int = ARRAY_BYTES, repeats: int = REPEATS) -> float:
    """The best of `repeats` triads a = b + 3 c over float32 arrays of `array_bytes`: bytes moved / seconds."""
    import torch

    n = max(1, array_bytes // 4)
    b, c = torch.ones(n), torch.full((n,), 2.0)
    a = torch.empty(n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)  # reads b and c, writes a
        best = min(best, time.perf_counter() - start)
    return 3 * n * 4 / best / 1e9


def cpu_bandwidth(cpu: str, threads: int, measure: Callable[[], float] | None = None, directory: Path | None = None,
                  again: bool = False) -> tuple[Measured, bool]:
    """This CPU's bandwidth at `threads`: from the cache when it holds it, else measured now and kept; and
    whether it came from the cache. A cache that cannot be read or written is measured past, never an error.

    `again` measures even when the cache holds a number, and keeps the larger: a triad run while other
    programs held the cores reads low, and a decode that beats it shows that it did.
    """
    path = (directory or data_dir()) / CACHE_FILE
    key = f"{cpu} | {threads} threads"
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    cached = None
    if isinstance(entry, dict) and isinstance(entry.get("gbs"), (int, float)) and entry["gbs"] > 0:
        cached = Measured(float(entry["gbs"]), cpu, threads, int(entry.get("array_bytes", ARRAY_BYTES)))
        if not again:
            return cached, True
    result = Measured((measure or triad_gbs)(), cpu, threads, ARRAY_BYTES)
    if cached is not None and cached.gbs > result.gbs:
        result = cached
    known[key] = asdict(result)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1) + "\n")
    except OSError:
        pass
    return result, False
