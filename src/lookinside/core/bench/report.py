"""What `llm bench` reports: the records its measurements become, and the statistics read from them.

core/bench/run.py measures (runs the loops, takes turns between them, keeps every synchronised step
time); this module only derives: medians and spreads, time to first token and decode rate (from
`Generation`'s definitions), inter-token percentiles (`statistics.quantiles`), the log-log slope
of a length sweep (`statistics.linear_regression`), the speed-of-light share, and the signs that
other load disturbed the timing. It imports no torch.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from lookinside.core.records import decode_seconds, first_token_seconds
from lookinside.core.request import CacheKind

BURST_GAP_S = 0.001  # tokens arriving closer than this were sent together
MAX_SPREAD = 1.5  # slowest / fastest timed repeat above this: something else was using the machine
CACHE_LABELS: dict[str, str] = {"dynamic": "cached", "static": "static-cache", "none": "uncached"}


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of a few timings, in seconds."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        """The spread of `samples` (at least one)."""
        return cls(statistics.median(samples), min(samples), max(samples))


@dataclass(frozen=True)
class Bandwidth:
    """The memory bandwidth the speed-of-light line divides by, and where it came from."""

    gbs: float | None
    source: str
    note: str | None = None


@dataclass(frozen=True)
class SpeedOfLight:
    """Decode against the memory-bandwidth bound: every token reads the weights and the KV cache."""

    bytes_per_token: float  # weights + KV cache at the mean decode length
    achieved_gbs: float
    bandwidth: Bandwidth
    best_tok_s: float | None  # what the bandwidth allows at best
    share: float | None  # achieved / bandwidth; above 1 is a measurement error, or the CPU's caches

    @property
    def warning(self) -> str | None:
        """A message when the result beats the bandwidth: a measurement error, or on the CPU its caches."""
        if self.share is None or self.share <= 1:
            return None
        beyond = f"achieved {self.achieved_gbs:.0f} GB/s is {self.share:.0%} of the {self.bandwidth.gbs:.0f} GB/s"
        if self.bandwidth.source.startswith("measured"):  # the CPU's triad, measured twice: its clock is synchronous
            return (f"{beyond} the triad measured: part of the {self.bytes_per_token / 2**20:,.0f} MiB a step reads "
                    "came from the CPU's caches, not from memory, so the share overstates how close this is to the limit")
        return f"{beyond} bandwidth: impossible, so this timing is wrong (unsynchronised clock or a wrong --bandwidth)"


class StepTimes:
    """What follows from per-repeat rows of step times (`step_seconds`; step 0 holds the first token)."""

    step_seconds: tuple[tuple[float, ...], ...]

    DERIVED: tuple[str, ...] = ("total_s", "itl_p50_s", "itl_p90_s")  # written into the JSON (core/wire.py)

    @property
    def totals(self) -> list[float]:
        """Each repeat's total time: the first token plus every later step."""
        return [sum(row) for row in self.step_seconds]

    @property
    def total_s(self) -> Spread:
        """Total time over the repeats."""
        return Spread.of(self.totals)

    @property
    def inter_token_s(self) -> list[float]:
        """Every step after the first, all repeats pooled."""
        return [s for row in self.step_seconds for s in row[1:]]

    @property
    def itl_p50_s(self) -> float | None:
        """Median inter-token latency."""
        return percentile(self.inter_token_s, 50)

    @property
    def itl_p90_s(self) -> float | None:
        """90th-percentile inter-token latency."""
        return percentile(self.inter_token_s, 90)


@dataclass(frozen=True)
class ModeResult(StepTimes):
    """One cache mode at one length: raw step times and what follows from them."""

    cache: CacheKind
    new_tokens: int
    prompt_tokens: int
    step_seconds: tuple[tuple[float, ...], ...]  # one row per measured repeat; step 0 includes the prefill
    token_ids: tuple[int, ...]
    deterministic: bool  # every repeat generated the same ids
    kv_cache_bytes: int  # from the config, for what the cache holds at the end; 0 without a cache
    kv_cache_measured_bytes: int | None  # summed from the cache tensors; None without a cache
    peak_memory_bytes: int
    speed_of_light: SpeedOfLight | None = None

    DERIVED = (*StepTimes.DERIVED, "cached", "ttft_s", "decode_tokens", "decode_s", "decode_tok_s")

    @property
    def cached(self) -> bool:
        """True when the run kept a KV cache (dynamic or static)."""
        return self.cache != "none"

    @property
    def ttft_s(self) -> float:
        """Median time to the first token (the prompt's prefill plus choosing one token)."""
        return statistics.median(first_token_seconds(row) or 0.0 for row in self.step_seconds)

    @property
    def decode_tokens(self) -> int:
        """The tokens after the first, which `decode_s` times: decode_tok_s x decode_s = decode_tokens."""
        return self.new_tokens - 1

    @property
    def decode_s(self) -> float:
        """Median time for the N-1 tokens after the first."""
        return statistics.median(decode_seconds(row) for row in self.step_seconds)

    @property
    def decode_tok_s(self) -> float | None:
        """Decode rate: (N - 1) tokens over `decode_s`; None when N is 1."""
        return (self.new_tokens - 1) / self.decode_s if self.new_tokens > 1 and self.decode_s > 0 else None

    @property
    def per_position_s(self) -> list[float]:
        """Median time of each step across repeats, by position (index 0 includes the prefill)."""
        return [statistics.median(column) for column in zip(*self.step_seconds)]


@dataclass(frozen=True)
class ReferenceRun:
    """transformers' own `model.generate` for the same prompt and N, greedy."""

    cache: CacheKind
    new_tokens: int
    totals: tuple[float, ...]
    same_tokens: bool  # its ids equal ours

    DERIVED = ("total_s", "tok_s")

    @property
    def total_s(self) -> Spread:
        """Total time over the repeats."""
        return Spread.of(self.totals)

    @property
    def tok_s(self) -> float:
        """New tokens per second, prefill included."""
        return self.new_tokens / self.total_s.median


@dataclass(frozen=True)
class SweepLine:
    """How one mode's total time grows with the number of new tokens."""

    cache: CacheKind
    lengths: tuple[int, ...]
    medians: tuple[float, ...]

    DERIVED = ("slope", "slope_last")

    @property
    def slope(self) -> float:
        """Least-squares slope of log(time) against log(length): 1 is linear, 2 quadratic."""
        return loglog_slope(self.lengths, self.medians)

    @property
    def slope_last(self) -> float:
        """The slope between the two longest lengths, where the quadratic term dominates."""
        return loglog_slope(self.lengths[-2:], self.medians[-2:])


@dataclass(frozen=True)
class BenchHeader:
    """What was measured, on what."""

    model: str
    parameters: int
    device: str
    device_name: str
    dtype: str
    attention: str
    torch_version: str
    transformers_version: str
    threads: int
    random_weights: bool
    layers: int
    threads_reason: str = ""  # why that many: --threads, or the idle cores at load


@dataclass(frozen=True)
class BenchReport:
    """Everything `llm bench` shows: header, one run per mode, reference, sweep, notes."""

    header: BenchHeader
    runs: tuple[ModeResult, ...]
    reference: ReferenceRun | None = None
    sweep: tuple[SweepLine, ...] = ()
    all_runs: tuple[ModeResult, ...] = ()  # every length of a sweep
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # results that cannot be true (above the bandwidth)
    noise: tuple[str, ...] = ()  # why these numbers look disturbed by other load (empty: they look steady)

    DERIVED = ("speedup", "same_tokens", "noisy")

    @property
    def noisy(self) -> bool:
        """True when the measurements look disturbed by other work on the machine."""
        return bool(self.noise)

    def run(self, cache: CacheKind) -> ModeResult | None:
        """The run for one mode, if it was timed."""
        return next((r for r in self.runs if r.cache == cache), None)

    @property
    def cached_run(self) -> ModeResult | None:
        """The run the headline compares: the dynamic cache's, else the static one's."""
        return self.run("dynamic") or self.run("static")

    @property
    def speedup(self) -> float | None:
        """Median total without the cache over median total with it."""
        on, off = self.cached_run, self.run("none")
        return off.total_s.median / on.total_s.median if on and off else None

    @property
    def same_tokens(self) -> bool | None:
        """Whether every timed mode generated the same ids (None with only one mode)."""
        ids = {r.token_ids for r in self.runs}
        return len(ids) == 1 if len(self.runs) > 1 else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile, interpolating between order statistics (the inclusive method); None for no values."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1] if 0 < q < 100 else (
        min(values) if q <= 0 else max(values))


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): the exponent k in y ~ x^k (nan when every x is the same)."""
    try:
        return statistics.linear_regression([math.log(x) for x in xs], [math.log(y) for y in ys]).slope
    except statistics.StatisticsError:
        return float("nan")


def noise_reasons(results: Sequence[ModeResult], sweep: Sequence[SweepLine]) -> tuple[str, ...]:
    """Signs that other load disturbed the timing: spread-out repeats, time shrinking with length, a slow cache."""
    reasons = []
    for run in results:
        if run.total_s.min > 0 and run.total_s.max / run.total_s.min > MAX_SPREAD:
            reasons.append(f"the {mode_name(run.cache)} runs of {run.new_tokens} tokens differ by "
                           f"{run.total_s.max / run.total_s.min:.1f}x (slowest / fastest; steady is under {MAX_SPREAD}x)")
    for line in sweep:
        if line.slope < 0:
            reasons.append(f"the {mode_name(line.cache)} sweep gets faster with length (log-log slope {line.slope:.2f})")
    by_length: dict[int, dict[CacheKind, ModeResult]] = {}
    for run in results:
        by_length.setdefault(run.new_tokens, {})[run.cache] = run
    for n, modes in by_length.items():
        off = modes.get("none")
        for on in (modes.get("dynamic"), modes.get("static")):
            if on is not None and off is not None and on.total_s.median > off.total_s.median:
                reasons.append(f"at {n} tokens the {mode_name(on.cache)} runs were slower than the uncached ones")
    return tuple(reasons)


def mode_name(cache: CacheKind) -> str:
    """cached, static-cache or uncached, as the notes say it."""
    return CACHE_LABELS[cache]


@dataclass(frozen=True)
class PrefixCache:
    """The same long prompt sent cold and then again: what the server's prefix cache saves on the prefill."""

    prompt_tokens: int | None  # as the server counted them
    cold_s: tuple[float, ...]  # one-token requests, each with a prompt the server had not seen
    warm_s: tuple[float, ...]  # the same prompts again

    DERIVED = ("speedup",)

    @property
    def speedup(self) -> float | None:
        """Median cold time over median warm time."""
        warm = statistics.median(self.warm_s) if self.warm_s else 0.0
        return statistics.median(self.cold_s) / warm if self.cold_s and warm > 0 else None


@dataclass(frozen=True)
class RemoteBenchReport(StepTimes):
    """`llm bench --endpoint`: streamed generation timed from this side of the network."""

    model: str
    endpoint: str
    server: str  # who owns the model, as /v1/models says (vllm, ...)
    new_tokens: int
    step_seconds: tuple[tuple[float, ...], ...]  # one row per timed stream; step 0 is time to first token
    prefix: PrefixCache | None
    unavailable: dict[str, str]

    DERIVED = (*StepTimes.DERIVED, "ttft_s", "decode_tok_s", "bursts")

    @property
    def ttft_s(self) -> Spread:
        """Time to the first token over the repeats (network and queueing included)."""
        return Spread.of([first_token_seconds(row) or 0.0 for row in self.step_seconds])

    @property
    def decode_tok_s(self) -> float | None:
        """Tokens per second after the first, from the median decode time."""
        decode = statistics.median(decode_seconds(row) for row in self.step_seconds)
        tokens = statistics.median(len(row) - 1 for row in self.step_seconds)
        return tokens / decode if tokens > 0 and decode > 0 else None


    @property
    def bursts(self) -> int:
        """Streams whose tokens mostly arrived together (gaps under 1 ms): the server held them back and sent them
        at once, so their first-token and inter-token times measure its buffering, not its generation."""
        return sum(1 for row in self.step_seconds
                   if len(row) > 2 and sum(1 for s in row[1:] if s < BURST_GAP_S) >= (len(row) - 1) / 2)
