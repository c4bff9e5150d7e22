"""Honest generation timing, the KV cache on and off, measured on the one generation loop.

`run_bench(lm, settings)` drives `generate` (greedy, end tokens ignored, exactly N new
tokens) per cache mode: `warmup` uncounted runs, then `repeat` timed runs that take turns
between the modes (and `model.generate`), keeping every device-synchronised `Step.seconds`. From those raw samples it derives the
total (median/min/max), time to first token, decode rate, inter-token latency, per-position
latency, the KV-cache size (from the config and measured from cache tensors), peak memory,
the speed-of-light line, a reference row timing transformers' `model.generate`, and a length
sweep with its log-log slope. Results are plain frozen dataclasses; nothing here prints.
"""

from __future__ import annotations

import math
import platform
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lookinside.core import errors
from lookinside.core.generate import collect, make_cache, prefill
from lookinside.core.hardware import GB, known_gpu, known_names
from lookinside.core.prompting import check_fits, encode_prompt
from lookinside.core.request import GenerationSettings
from lookinside.core.sampling import SamplingParams
from lookinside.core.timing import now, peak_memory_bytes, reset_peak_memory, reset_peak_rss

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from lookinside.core.loading import LM

# The book's chapter 3 experiment: this prompt, 100 new tokens, cache on and off.
DEFAULT_PROMPT = (
    "Write a very long email apologizing to Sarah for the tragic gardening mishap. Explain how it happened."
)
DEFAULT_NEW_TOKENS = 100
GREEDY = SamplingParams(temperature=0.0)
MAX_SPREAD = 1.5  # slowest / fastest timed repeat above this: something else was using the machine


@dataclass(frozen=True)
class BenchSettings:
    """What to time: prompt, length, modes, warm-up and repeats; checked before any loading."""

    new_tokens: int = DEFAULT_NEW_TOKENS
    prompt: str | None = None
    prompt_tokens: int | None = None
    modes: tuple[bool, ...] = (True, False)  # True: with the KV cache
    warmup: int = 1
    repeat: int = 3
    sweep: tuple[int, ...] = ()
    bandwidth_gbs: float | None = None
    reference: bool = True
    threads: int | None = None  # CPU threads for torch; None leaves torch's default

    def __post_init__(self) -> None:
        if self.new_tokens < 1:
            raise errors.BadInput(f"--new-tokens must be at least 1, not {self.new_tokens}")
        if self.prompt is not None and self.prompt_tokens is not None:
            raise errors.BadInput("give --prompt or --prompt-tokens, not both")
        if self.prompt is not None and not self.prompt.strip():
            raise errors.EmptyPrompt("--prompt is empty: give some text, or --prompt-tokens N")
        if self.prompt_tokens is not None and self.prompt_tokens < 1:
            raise errors.BadInput(f"--prompt-tokens must be at least 1, not {self.prompt_tokens}")
        if not self.modes:
            raise errors.BadInput("nothing to time: choose --cache, --no-cache, or neither for both")
        if self.warmup < 0:
            raise errors.BadInput(f"--warmup must be 0 or more, not {self.warmup}")
        if self.repeat < 1:
            raise errors.BadInput(f"--repeat must be at least 1, not {self.repeat}")
        if any(n < 1 for n in self.sweep):
            raise errors.BadInput(f"--sweep lengths must be at least 1, not {min(self.sweep)}")
        if self.threads is not None and self.threads < 1:
            raise errors.BadInput(f"--threads must be at least 1, not {self.threads}")
        if self.bandwidth_gbs is not None and not self.bandwidth_gbs > 0:
            raise errors.BadInput(f"--bandwidth must be a positive number of GB/s, not {self.bandwidth_gbs}")

    @property
    def lengths(self) -> tuple[int, ...]:
        """The new-token counts to run: the sweep's, or just --new-tokens."""
        return self.sweep or (self.new_tokens,)


def parse_sweep(text: str | None) -> tuple[int, ...]:
    """`32,128,512` -> (32, 128, 512), sorted and without repeats."""
    if not text:
        return ()
    try:
        lengths = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise errors.BadInput(f"--sweep wants lengths such as 32,128,512, not {text!r}") from None
    if len(lengths) < 2:
        raise errors.BadInput(f"--sweep needs at least two lengths to show growth, not {text!r}")
    return tuple(lengths)


def modes_for(cache: bool | None) -> tuple[bool, ...]:
    """--cache -> (True,), --no-cache -> (False,), neither -> both."""
    return (True, False) if cache is None else (cache,)


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
    share: float | None  # achieved / bandwidth; above 1 is a measurement error

    @property
    def warning(self) -> str | None:
        """A message when the result beats physics (a measurement error)."""
        if self.share is not None and self.share > 1:
            return (f"achieved {self.achieved_gbs:.0f} GB/s is {self.share:.0%} of the {self.bandwidth.gbs:.0f} GB/s "
                    "bandwidth: impossible, so this timing is wrong (unsynchronised clock or a wrong --bandwidth)")
        return None


@dataclass(frozen=True)
class ModeResult:
    """One cache mode at one length: raw step times and what follows from them."""

    cache: bool
    new_tokens: int
    prompt_tokens: int
    step_seconds: tuple[tuple[float, ...], ...]  # one row per measured repeat; step 0 includes the prefill
    token_ids: tuple[int, ...]
    deterministic: bool  # every repeat generated the same ids
    kv_cache_bytes: int  # from the config, for what the cache holds at the end; 0 without a cache
    kv_cache_measured_bytes: int | None  # summed from the cache tensors; None without a cache
    peak_memory_bytes: int
    speed_of_light: SpeedOfLight | None = None

    @property
    def totals(self) -> list[float]:
        """Each repeat's total time: prefill plus every decode step."""
        return [sum(row) for row in self.step_seconds]

    @property
    def total_s(self) -> Spread:
        """Total time over the repeats."""
        return Spread.of(self.totals)

    @property
    def ttft_s(self) -> float:
        """Median time to the first token (the prompt's prefill plus choosing one token)."""
        return statistics.median(row[0] for row in self.step_seconds)

    @property
    def decode_s(self) -> float:
        """Median time for the N-1 tokens after the first."""
        return statistics.median(sum(row[1:]) for row in self.step_seconds)

    @property
    def decode_tok_s(self) -> float | None:
        """Decode rate: (N - 1) tokens over `decode_s`; None when N is 1."""
        return (self.new_tokens - 1) / self.decode_s if self.new_tokens > 1 and self.decode_s > 0 else None

    @property
    def inter_token_s(self) -> list[float]:
        """Every decode step's time, all repeats pooled."""
        return [s for row in self.step_seconds for s in row[1:]]

    @property
    def itl_p50_s(self) -> float | None:
        """Median inter-token latency."""
        return percentile(self.inter_token_s, 50)

    @property
    def itl_p90_s(self) -> float | None:
        """90th-percentile inter-token latency."""
        return percentile(self.inter_token_s, 90)

    @property
    def per_position_s(self) -> list[float]:
        """Median time of each step across repeats, by position (index 0 includes the prefill)."""
        return [statistics.median(column) for column in zip(*self.step_seconds)]


@dataclass(frozen=True)
class ReferenceRun:
    """transformers' own `model.generate` for the same prompt and N, greedy."""

    cache: bool
    new_tokens: int
    totals: tuple[float, ...]
    same_tokens: bool  # its ids equal ours

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

    cache: bool
    lengths: tuple[int, ...]
    medians: tuple[float, ...]

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

    @property
    def noisy(self) -> bool:
        """True when the measurements look disturbed by other work on the machine."""
        return bool(self.noise)

    def run(self, cache: bool) -> ModeResult | None:
        """The run for one mode, if it was timed."""
        return next((r for r in self.runs if r.cache == cache), None)

    @property
    def speedup(self) -> float | None:
        """Median total without the cache over median total with it."""
        on, off = self.run(True), self.run(False)
        return off.total_s.median / on.total_s.median if on and off else None

    @property
    def same_tokens(self) -> bool | None:
        """Whether the cached and uncached runs generated the same ids."""
        on, off = self.run(True), self.run(False)
        return on.token_ids == off.token_ids if on and off else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile by linear interpolation between order statistics; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): the exponent k in y ~ x^k."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    spread = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / spread if spread else float("nan")


def kv_cache_bytes(config: PretrainedConfig, element_bytes: int, tokens: int) -> int:
    """2 (keys and values) x layers x KV heads x head dim x bytes per element x tokens."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element_bytes * tokens


def measured_cache_bytes(lm: LM, ids: list[int]) -> int:
    """Bytes in the key and value tensors of a DynamicCache after a prefill of `ids`."""
    cache = make_cache(lm, "dynamic", len(ids))
    with torch.inference_mode():
        prefill(lm, torch.tensor([ids], device=lm.device), cache)  # (1, seq) in, cache filled
    layers = getattr(cache, "layers", [])
    return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: all parameters but an untied input-embedding table."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if embed is not None and (output is None or output.weight is not embed.weight):
        total -= embed.weight.numel() * embed.weight.element_size()  # a lookup reads one row, not the table
    return total


def resolve_bandwidth(device: torch.device, given_gbs: float | None) -> Bandwidth:
    """--bandwidth if given, else the table's number for this CUDA GPU, else none (with a note on CUDA)."""
    if given_gbs is not None:
        return Bandwidth(given_gbs, "--bandwidth")
    if device.type != "cuda":
        return Bandwidth(None, "none")
    name = torch.cuda.get_device_name(device)
    gpu = known_gpu(name, torch.cuda.get_device_properties(device).total_memory)
    if gpu is None:
        return Bandwidth(None, "unknown", (
            f"{name} is not in the bandwidth table ({', '.join(known_names())}): no speed-of-light line; "
            "give its memory bandwidth with --bandwidth GB/s"))
    return Bandwidth(gpu.bandwidth_gbs, f"{gpu.label}, {gpu.source}")


def speed_of_light(lm: LM, run: ModeResult, bandwidth: Bandwidth) -> SpeedOfLight | None:
    """Bytes each cached decode step reads, the GB/s that makes, and its share of the bandwidth."""
    if not run.cache or run.decode_tok_s is None:
        return None  # without a cache a step recomputes the whole sequence: compute-bound, not read-bound
    mean_length = run.prompt_tokens + run.new_tokens / 2  # decode steps attend over P+1 .. P+N-1 positions
    kv = kv_cache_bytes(lm.config, lm.dtype.itemsize, round(mean_length))
    per_token = weight_bytes(lm.model) + kv
    achieved = per_token * run.decode_tok_s / GB
    best = bandwidth.gbs * GB / per_token if bandwidth.gbs else None
    share = achieved / bandwidth.gbs if bandwidth.gbs else None
    return SpeedOfLight(per_token, achieved, bandwidth, best, share)


def bench_prompt_ids(tokenizer: PreTrainedTokenizerBase, settings: BenchSettings) -> list[int]:
    """The prompt's ids: --prompt's text, or the default prompt's ids cycled to --prompt-tokens."""
    base = encode_prompt(tokenizer, settings.prompt or DEFAULT_PROMPT)
    if settings.prompt_tokens is None:
        return base
    head = base[:1] if base and base[0] == tokenizer.bos_token_id else []
    body = base[len(head):] or base
    return (head + body * (settings.prompt_tokens // len(body) + 1))[: settings.prompt_tokens]


# One timed run: its step times (one entry for model.generate), the ids it chose, its peak memory.
Timed = tuple[tuple[float, ...], tuple[int, ...], int]
REFERENCE = "model.generate"


def our_loop(lm: LM, prompt_ids: list[int], cache: bool, new_tokens: int) -> Callable[[], Timed]:
    """One run of the generation loop: exactly `new_tokens` greedy tokens, end tokens ignored."""
    config = GenerationSettings(max_new_tokens=new_tokens, cache="dynamic" if cache else "none", ignore_eos=True)

    def run() -> Timed:
        reset_peak_memory(lm.device)
        reset_peak_rss()
        generation = collect(lm, prompt_ids, GREEDY, config)
        if len(generation.steps) != new_tokens:  # ignore_eos makes this impossible; never report a short run
            raise errors.LookinsideError(f"generation stopped after {len(generation.steps)} of {new_tokens} tokens")
        steps = tuple(step.seconds for step in generation.steps)
        return steps, tuple(generation.token_ids), peak_memory_bytes(lm.device)

    return run


def library_loop(lm: LM, prompt_ids: list[int], cache: bool, new_tokens: int) -> Callable[[], Timed]:
    """One run of transformers' `model.generate` for the same tokens (min = max = N, greedy)."""
    ids = torch.tensor([prompt_ids], device=lm.device)  # (1, prompt)
    # eos_token_id=None is generate's way to ignore end tokens, as ours does; without it,
    # min_new_tokens would forbid them instead and the two loops would pick different tokens.
    kwargs = dict(
        attention_mask=torch.ones_like(ids), min_new_tokens=new_tokens, max_new_tokens=new_tokens,
        do_sample=False, use_cache=cache, eos_token_id=None, pad_token_id=lm.tokenizer.pad_token_id or 0,
        temperature=None, top_p=None, top_k=None,
    )

    def run() -> Timed:
        reset_peak_memory(lm.device)
        with torch.inference_mode():
            start = now(lm.device)
            out = lm.model.generate(ids, **kwargs)  # (1, prompt + new_tokens)
            seconds = now(lm.device) - start
        return (seconds,), tuple(out[0, len(prompt_ids):].tolist()), peak_memory_bytes(lm.device)

    return run


def alternate(runners: dict[object, Callable[[], Timed]], warmup: int, repeat: int) -> dict[object, list[Timed]]:
    """Warm-ups (uncounted), then timed runs taking turns, so load that drifts over minutes
    (other jobs on the machine, clocks, heat) hits every runner alike instead of one mode."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    timed: dict[object, list[Timed]] = {key: [] for key in runners}
    for _ in range(repeat):
        for key, run in runners.items():
            timed[key].append(run())
    return timed


def mode_result(lm: LM, prompt_ids: list[int], cache: bool, new_tokens: int, runs: list[Timed]) -> ModeResult:
    """One mode's timed runs as a `ModeResult`, with its KV-cache size from the config and measured."""
    ids = [run[1] for run in runs]
    held = len(prompt_ids) + new_tokens - 1  # at the last step: the prompt and every new token but the last
    return ModeResult(
        cache=cache,
        new_tokens=new_tokens,
        prompt_tokens=len(prompt_ids),
        step_seconds=tuple(run[0] for run in runs),
        token_ids=ids[0],
        deterministic=all(i == ids[0] for i in ids),
        kv_cache_bytes=kv_cache_bytes(lm.config, lm.dtype.itemsize, held) if cache else 0,
        kv_cache_measured_bytes=measured_cache_bytes(lm, prompt_ids + list(ids[0][:-1])) if cache else None,
        peak_memory_bytes=max(run[2] for run in runs),
    )


def reference_run(ours: ModeResult, runs: list[Timed]) -> ReferenceRun:
    """model.generate's timed runs beside the mode they copy."""
    same = all(run[1] == ours.token_ids for run in runs)
    return ReferenceRun(ours.cache, ours.new_tokens, tuple(run[0][0] for run in runs), same)


def describe(lm: LM, random_weights: bool = False, threads_reason: str | None = None) -> BenchHeader:
    """The header: model, parameter count, device, dtype, attention, library versions."""
    import transformers

    return BenchHeader(
        model=lm.name,
        parameters=sum(p.numel() for p in lm.model.parameters()),
        device=str(lm.device),
        device_name=device_name(lm.device),
        dtype=str(lm.dtype).removeprefix("torch."),
        attention=lm.attn_implementation,
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        threads=torch.get_num_threads(),
        random_weights=random_weights,
        layers=lm.config.get_text_config().num_hidden_layers,
        threads_reason=threads_reason or (lm.threads.reason if lm.threads else "torch's default"),
    )


def device_name(device: torch.device) -> str:
    """The GPU's name from CUDA, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def run_bench(
    lm: LM,
    settings: BenchSettings,
    notes: Sequence[str] = (),
    random_weights: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Time every mode at every length, then the reference row; the longest length is the headline."""
    with _threads(settings.threads):
        return _run_bench(lm, settings, notes, random_weights, progress or (lambda _: None))


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch's CPU thread count for the timing only; the caller's setting comes back after."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_bench(
    lm: LM, settings: BenchSettings, notes: Sequence[str], random_weights: bool, tell: Callable[[str], None]
) -> BenchReport:
    prompt_ids = bench_prompt_ids(lm.tokenizer, settings)
    check_fits(len(prompt_ids), lm.context_length, max(settings.lengths))
    bandwidth = resolve_bandwidth(lm.device, settings.bandwidth_gbs)
    runs = f"{settings.warmup} warm-up + {settings.repeat} timed runs each, taking turns"
    longest = max(settings.lengths)
    results: list[ModeResult] = []
    reference = None
    for n in settings.lengths:
        runners: dict[object, Callable[[], Timed]] = {c: our_loop(lm, prompt_ids, c, n) for c in settings.modes}
        if settings.reference and n == longest:
            runners[REFERENCE] = library_loop(lm, prompt_ids, settings.modes[0], n)
        tell(f"timing {n} tokens: {', '.join(_label(key) for key in runners)} ({runs})")
        timed = alternate(runners, settings.warmup, settings.repeat)
        modes = [mode_result(lm, prompt_ids, cache, n, timed[cache]) for cache in settings.modes]
        results += [_with_light(lm, run, bandwidth) for run in modes]
        if REFERENCE in timed:
            reference = reference_run(modes[0], timed[REFERENCE])
    headline = tuple(r for r in results if r.new_tokens == longest)
    sweep = tuple(
        SweepLine(cache, settings.lengths, tuple(r.total_s.median for r in results if r.cache == cache))
        for cache in settings.modes
    ) if settings.sweep else ()
    all_notes = (*notes, *([bandwidth.note] if bandwidth.note else []))
    warnings = tuple(w for r in results if r.speed_of_light and (w := r.speed_of_light.warning))
    reason = "BenchSettings.threads" if settings.threads else None
    return BenchReport(describe(lm, random_weights, reason), headline, reference, sweep, tuple(results), all_notes,
                       warnings, noise_reasons(results, sweep))


def noise_reasons(results: Sequence[ModeResult], sweep: Sequence[SweepLine]) -> tuple[str, ...]:
    """Signs that other load disturbed the timing: spread-out repeats, time shrinking with length, a slow cache."""
    reasons = []
    for run in results:
        if run.total_s.min > 0 and run.total_s.max / run.total_s.min > MAX_SPREAD:
            reasons.append(f"the {_mode(run.cache)} runs of {run.new_tokens} tokens differ by "
                           f"{run.total_s.max / run.total_s.min:.1f}x (slowest / fastest; steady is under {MAX_SPREAD}x)")
    for line in sweep:
        if line.slope < 0:
            reasons.append(f"the {_mode(line.cache)} sweep gets faster with length (log-log slope {line.slope:.2f})")
    by_length: dict[int, dict[bool, ModeResult]] = {}
    for run in results:
        by_length.setdefault(run.new_tokens, {})[run.cache] = run
    for n, pair in by_length.items():
        if len(pair) == 2 and pair[True].total_s.median > pair[False].total_s.median:
            reasons.append(f"at {n} tokens the cached runs were slower than the uncached ones")
    return tuple(reasons)


def _mode(cache: bool) -> str:
    return "cached" if cache else "uncached"


def _label(key: object) -> str:
    return str(key) if isinstance(key, str) else "with the KV cache" if key else "without it"


def _with_light(lm: LM, run: ModeResult, bandwidth: Bandwidth) -> ModeResult:
    from dataclasses import replace

    return replace(run, speed_of_light=speed_of_light(lm, run, bandwidth))
