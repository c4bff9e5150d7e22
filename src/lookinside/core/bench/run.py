"""Honest generation timing, measured on the one generation loop, per KV-cache mode.

`run_bench(lm, settings)` drives `generate` (greedy, end tokens ignored, exactly N new
tokens) per cache mode (`CacheKind`: dynamic, static or none): `warmup` uncounted runs, then
`repeat` timed runs that take turns between the modes (and `model.generate`), keeping every
device-synchronised `Step.seconds`, the ids and the peak memory of each run (`Timed`). It also
measures what only the model can tell: the KV cache's bytes, the weights a step reads, the GPU's
bandwidth. core/bench/report.py turns those samples into the report; nothing here prints.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from lookinside.core import errors
from lookinside.core.bench.report import (
    Bandwidth,
    BenchHeader,
    BenchReport,
    ModeResult,
    ReferenceRun,
    SpeedOfLight,
    SweepLine,
    noise_reasons,
)
from lookinside.core.decoding.generate import collect, make_cache, prefill
from lookinside.core.decoding.prompting import check_fits, encode_prompt
from lookinside.core.decoding.timing import now, peak_memory_bytes, reset_peak_memory, reset_peak_rss
from lookinside.core.model.bandwidth import cpu_bandwidth
from lookinside.core.model.hardware import GB, known_gpu, known_names
from lookinside.core.model.quantize import parameter_count, stored_bytes
from lookinside.core.request import (
    DEFAULT_PROMPT,
    BenchSettings,
    CacheKind,
    GenerationSettings,
)
from lookinside.core.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0.0)

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from lookinside.core.model.loading import LM

def kv_cache_bytes(config: PretrainedConfig, element_bytes: int, tokens: int) -> int:
    """2 (keys and values) x layers x KV heads x head dim x bytes per element x tokens."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element_bytes * tokens


def measured_cache_bytes(lm: LM, ids: list[int], kind: CacheKind = "dynamic", max_len: int | None = None) -> int:
    """Bytes in the key and value tensors of a `kind` cache after a prefill of `ids` (a static one holds `max_len`)."""
    cache = make_cache(lm, kind, max_len or len(ids))
    with torch.inference_mode():
        prefill(lm, torch.tensor([ids], device=lm.device), cache)  # (1, seq) in, cache filled
    layers = getattr(cache, "layers", [])
    return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: all the weights as stored (the packed int8 ones of the CPU's
    `--quantize int8` too, which are no parameters) but an untied input-embedding table."""
    total = stored_bytes(model)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    table = getattr(embed, "weight", None)
    if embed is not None and (table is None or getattr(output, "weight", None) is not table):
        total -= stored_bytes(embed)  # a lookup reads one row, not the table (packed or not)
    return total


def resolve_bandwidth(device: torch.device, given_gbs: float | None) -> Bandwidth:
    """--bandwidth if given, else the table's number for this CUDA GPU, else the CPU's measured once (cached in the
    data directory), else none."""
    if given_gbs is not None:
        return Bandwidth(given_gbs, "--bandwidth")
    if device.type == "cpu":
        measured, cached = cpu_bandwidth(device_name(device), torch.get_num_threads())
        return Bandwidth(measured.gbs, measured.source(cached))
    if device.type != "cuda":
        return Bandwidth(None, "none")
    name = torch.cuda.get_device_name(device)
    gpu = known_gpu(name, torch.cuda.get_device_properties(device).total_memory)
    if gpu is None:
        return Bandwidth(None, "unknown", (
            f"{name} is not in the bandwidth table ({', '.join(known_names())}): no speed-of-light line; "
            "give its memory bandwidth with --bandwidth GB/s"))
    return Bandwidth(gpu.bandwidth_gbs, f"{gpu.label}, {gpu.source}")


def measure_again(device: torch.device) -> Bandwidth:
    """The CPU's bandwidth measured now, the larger of it and the cached one kept."""
    measured, _ = cpu_bandwidth(device_name(device), torch.get_num_threads(), again=True)
    return Bandwidth(measured.gbs, measured.source(False) + ", measured again: a decode read faster")


def speed_of_light(lm: LM, run: ModeResult, bandwidth: Bandwidth) -> SpeedOfLight | None:
    """Bytes each cached decode step reads, the GB/s that makes, and its share of the bandwidth."""
    if not run.cached or run.decode_tok_s is None:
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


@dataclass(frozen=True)
class Timed:
    """One timed run: its step times (a single entry for model.generate), the ids it chose, its peak memory."""

    step_seconds: tuple[float, ...]
    token_ids: tuple[int, ...]
    peak_memory_bytes: int


REFERENCE = "model.generate"  # the runners' key for transformers' loop; ours are keyed by their CacheKind


def our_loop(lm: LM, prompt_ids: list[int], cache: CacheKind, new_tokens: int,
             compile: bool = False) -> Callable[[], Timed]:
    """One run of the generation loop: exactly `new_tokens` greedy tokens, end tokens ignored."""
    compile = compile and cache != "none"
    settings = GenerationSettings(max_new_tokens=new_tokens, cache=cache, ignore_eos=True, compile=compile)

    def run() -> Timed:
        reset_peak_memory(lm.device)
        reset_peak_rss()
        generation = collect(lm, prompt_ids, GREEDY, settings)
        if len(generation.steps) != new_tokens:  # ignore_eos makes this impossible; never report a short run
            raise errors.LookinsideError(f"generation stopped after {len(generation.steps)} of {new_tokens} tokens")
        steps = tuple(step.seconds for step in generation.steps)
        return Timed(steps, tuple(generation.token_ids), peak_memory_bytes(lm.device))

    return run


def library_loop(lm: LM, prompt_ids: list[int], cache: CacheKind, new_tokens: int) -> Callable[[], Timed]:
    """One run of transformers' `model.generate` for the same tokens (min = max = N, greedy)."""
    ids = torch.tensor([prompt_ids], device=lm.device)  # (1, prompt)
    # eos_token_id=None is generate's way to ignore end tokens, as ours does; without it,
    # min_new_tokens would forbid them instead and the two loops would pick different tokens.
    kwargs = dict(
        attention_mask=torch.ones_like(ids), min_new_tokens=new_tokens, max_new_tokens=new_tokens,
        do_sample=False, use_cache=cache != "none", eos_token_id=None, pad_token_id=lm.tokenizer.pad_token_id or 0,
        temperature=None, top_p=None, top_k=None, **({"cache_implementation": "static"} if cache == "static" else {}),
    )

    def run() -> Timed:
        reset_peak_memory(lm.device)
        with torch.inference_mode():
            start = now(lm.device)
            out = lm.model.generate(ids, **kwargs)  # (1, prompt + new_tokens)
            seconds = now(lm.device) - start
        return Timed((seconds,), tuple(out[0, len(prompt_ids):].tolist()), peak_memory_bytes(lm.device))

    return run


def alternate(runners: dict[str, Callable[[], Timed]], warmup: int, repeat: int,
              on_warm: Callable[[], None] = lambda: None) -> dict[str, list[Timed]]:
    """Warm-ups (uncounted), then timed runs taking turns, so load that drifts over minutes
    (other jobs on the machine, clocks, heat) hits every runner alike instead of one mode."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    on_warm()
    timed: dict[str, list[Timed]] = {key: [] for key in runners}
    for _ in range(repeat):
        for key, run in runners.items():
            timed[key].append(run())
    return timed


def mode_result(lm: LM, prompt_ids: list[int], cache: CacheKind, new_tokens: int, runs: list[Timed]) -> ModeResult:
    """One mode's timed runs as a `ModeResult`, with its KV-cache size from the config and measured."""
    ids = [run.token_ids for run in runs]
    kept = cache != "none"
    held = len(prompt_ids) + new_tokens - 1  # at the last step: the prompt and every new token but the last
    return ModeResult(
        cache=cache,
        new_tokens=new_tokens,
        prompt_tokens=len(prompt_ids),
        step_seconds=tuple(run.step_seconds for run in runs),
        token_ids=ids[0],
        deterministic=all(i == ids[0] for i in ids),
        kv_cache_bytes=kv_cache_bytes(lm.config, lm.dtype.itemsize, held) if kept else 0,
        kv_cache_measured_bytes=measured_cache_bytes(lm, prompt_ids + list(ids[0][:-1]), cache,
                                                     len(prompt_ids) + new_tokens) if kept else None,
        peak_memory_bytes=max(run.peak_memory_bytes for run in runs),
    )


def reference_run(ours: ModeResult, runs: list[Timed]) -> ReferenceRun:
    """model.generate's timed runs beside the mode they copy."""
    same = all(run.token_ids == ours.token_ids for run in runs)
    return ReferenceRun(ours.cache, ours.new_tokens, tuple(run.step_seconds[0] for run in runs), same)


def describe(lm: LM, random_weights: bool = False, threads_reason: str | None = None) -> BenchHeader:
    """The header: model, parameter count, device, dtype, attention, library versions."""
    import transformers

    return BenchHeader(
        model=lm.name,
        parameters=parameter_count(lm.model),
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
    if settings.compile:
        settings, compile_notes = compiled_settings(lm, settings, len(prompt_ids))
        notes = (*notes, *compile_notes)
    graphs = compiled_graphs()
    bandwidth = resolve_bandwidth(lm.device, settings.bandwidth_gbs)
    runs = f"{settings.warmup} warm-up + {settings.repeat} timed runs each, taking turns"
    longest = max(settings.lengths)
    results: list[ModeResult] = []
    reference = None
    for n in settings.lengths:
        runners: dict[str, Callable[[], Timed]] = {c: our_loop(lm, prompt_ids, c, n, settings.compile)
                                                   for c in settings.modes}
        if settings.reference and n == longest:
            runners[REFERENCE] = library_loop(lm, prompt_ids, settings.modes[0], n)
        tell(f"timing {n} tokens: {', '.join(_label(key) for key in runners)} ({runs})")
        timed = alternate(runners, settings.warmup, settings.repeat, on_warm=lambda: graphs.update(compiled_graphs()))
        modes = [mode_result(lm, prompt_ids, cache, n, timed[cache]) for cache in settings.modes]
        results += [_with_light(lm, run, bandwidth) for run in modes]
        if REFERENCE in timed:
            reference = reference_run(modes[0], timed[REFERENCE])
    if bandwidth.source.startswith("measured") and any(
            r.speed_of_light and r.speed_of_light.share and r.speed_of_light.share > 1 for r in results):
        bandwidth = measure_again(lm.device)  # a decode read faster than the cached triad: it ran on a busy machine
        results = [_with_light(lm, run, bandwidth) for run in results]
    headline = tuple(r for r in results if r.new_tokens == longest)
    sweep = tuple(
        SweepLine(cache, settings.lengths, tuple(r.total_s.median for r in results if r.cache == cache))
        for cache in settings.modes
    ) if settings.sweep else ()
    all_notes = (*notes, *([bandwidth.note] if bandwidth.note else []), *compile_outcome(lm, settings, graphs))
    warnings = tuple(w for r in results if r.speed_of_light and (w := r.speed_of_light.warning))
    reason = "BenchSettings.threads" if settings.threads else None
    return BenchReport(describe(lm, random_weights, reason), headline, reference, sweep, tuple(results), all_notes,
                       warnings, noise_reasons(results, sweep))


def compiled_settings(lm: LM, settings: BenchSettings, prompt_tokens: int) -> tuple[BenchSettings, tuple[str, ...]]:
    """With --compile the cached modes run the compiled step over a static cache (so "dynamic" becomes "static"),
    after at least one warm-up run, which pays for the compiling."""
    from lookinside.core.decoding.compiled import compile_mode, run_cache_length  # deferred: torch

    modes = tuple(dict.fromkeys("static" if m != "none" else m for m in settings.modes))
    length = run_cache_length(lm.config, prompt_tokens + max(settings.lengths), lm.context_length)
    mode = compile_mode(lm.device)
    note = (f"--compile: the decode step is torch.compile'd (inductor{', ' + mode if mode else ''}) over a static "
            f"KV cache of {length} positions; compiling happens in the warm-up, never in a timed run")
    return replace(settings, modes=modes, warmup=max(1, settings.warmup)), (note,)


def compiled_graphs() -> dict[str, int]:
    """How many graphs torch.compile has made in this process (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return {"graphs": counters["stats"]["unique_graphs"]}


def compile_outcome(lm: LM, settings: BenchSettings, warm: dict[str, int]) -> tuple[str, ...]:
    """A note when compiling failed (the runs were eager), or when the step compiled again during the timed runs."""
    if not settings.compile:
        return ()
    from lookinside.core.decoding.compiled import Compiled  # deferred: torch

    compiled = Compiled.for_model(lm)
    if compiled.note:
        return (compiled.note,)
    again = compiled_graphs()["graphs"] - warm["graphs"]
    return (f"--compile: the step compiled {again} more time(s) during the timed runs: their times include it",
            ) if again else ()


def _label(key: str) -> str:
    return {"dynamic": "with the KV cache", "static": "with a static KV cache", "none": "without it"}.get(key, key)


def _with_light(lm: LM, run: ModeResult, bandwidth: Bandwidth) -> ModeResult:
    return replace(run, speed_of_light=speed_of_light(lm, run, bandwidth))
