"""Honest clocks: synchronise the device before reading the time; memory readings."""

from __future__ import annotations

import resource
import sys
import time

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it measures that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def now(device: torch.device) -> float:
    """perf_counter after the device is idle."""
    sync(device)
    return time.perf_counter()


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak-memory reading on CUDA (a no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak bytes the CUDA allocator handed out, else the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def reset_peak_rss() -> bool:
    """Start a fresh peak-RSS reading (Linux only: /proc/self/clear_refs); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # 5 resets the resident-set high-water mark that ru_maxrss reports
        return True
    except OSError:
        return False
