"""How many CPU threads torch should use: as many as there are idle cores, measured at load.

torch's default is one thread per core. On a machine where another process keeps a core
busy, that default makes every matrix multiply wait for a thread that cannot run: the tiny
model fell from 271 to 87 tokens/s, the Phi-3 shape from 11.8 to 6.9 (docs/benchmarks.md,
scripts/bench_threads.py). Idle, more threads win (tiny 246 -> 309, Phi-3 shape 10.8 -> 18.3
with 2). So the default is the number of cores that are idle right now, read (psutil: /proc/stat on Linux) over a tenth of a second, and at least one; `--threads N` overrides it.
No torch import here: the choice is plain data, applied by the loader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lookinside.core.errors import BadInput
from lookinside.core.rules import check_threads

SAMPLE_SECONDS = 0.1
# Past a few threads a core, torch's threads only wait for each other; far past it the OpenMP runtime
# cannot start them at all and prints its own line ("libgomp: Thread creation failed") instead of ours.
MAX_THREADS_PER_CORE = 4


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count for torch's CPU kernels and why it was chosen."""

    count: int
    reason: str
    auto: bool = False  # chosen from the idle cores, not given with --threads

    def describe(self) -> str:
        """`2 threads (auto: 2 of 2 cores idle)`."""
        return f"{self.count} thread{'s' * (self.count != 1)} ({self.reason})"

    def streaming(self) -> int:
        """The count while a server decodes and streams: one core fewer when chosen automatically.

        A server's event loop writes every token to its client while the model decodes the next; with a
        thread on every core, torch's threads wait for the core the event loop holds (one attention call
        of the tiny model took 160 us with 2 threads on a busy 2-core machine, 10 us with one).
        """
        return max(1, self.count - 1) if self.auto else self.count


def choose_threads(requested: int | None, cores: int | None = None, idle: float | None = None) -> ThreadChoice:
    """`requested` as given, else one thread per idle core (measured when `idle` is None), at least one."""
    cores = cores or os.cpu_count() or 1
    check_threads(requested)
    if requested is not None:
        if requested > (most := MAX_THREADS_PER_CORE * cores):
            raise BadInput(f"--threads {requested} is more than this machine can run: it has {cores} "
                           f"core{'s' * (cores != 1)}, so at most {most} ({MAX_THREADS_PER_CORE} a core)")
        return ThreadChoice(requested, "--threads")
    idle = idle_cores(cores) if idle is None else idle
    if idle is None:
        return ThreadChoice(cores, f"auto: {cores} cores, load not readable here", auto=True)
    count = max(1, min(cores, round(idle)))
    busy = "" if count == cores else ", the others busy"
    return ThreadChoice(count, f"auto: {count} of {cores} cores idle{busy}", auto=True)


def idle_cores(cores: int, seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many cores were idle over the last `seconds` (idle and iowait time, psutil's reading of /proc/stat or the
    system's own counters); None where it cannot be read."""
    import psutil  # deferred: 5-40 ms, paid only when a model loads (with torch), never by `llm --help`

    try:
        times = psutil.cpu_times_percent(interval=seconds)
    except (OSError, RuntimeError, NotImplementedError):
        return None
    idle = times.idle + getattr(times, "iowait", 0.0)  # percent of all cores' time
    return cores * idle / 100
