"""`llm bench`: time generation with the KV cache on and off, honestly."""

from dataclasses import replace
from typing import Annotated, Optional

import typer

from lookinside.cli.backends import open_backend
from lookinside.cli.loading import load_here
from lookinside.cli.options import MODEL_PANEL, JsonOpt, Keep, Remote, keep_options, model_options, remote_options
from lookinside.core.errors import BadInput
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import BenchSettings, modes_for, parse_sweep

BENCH_PANEL = "Benchmark"


def _opt(*names: str, help: str, panel: str = BENCH_PANEL, **kwargs) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, rich_help_panel=panel, **kwargs)


@model_options
@remote_options
@keep_options
def bench(
    cache: Annotated[Optional[bool], _opt(
        "--cache/--no-cache", help="Time only with (or only without) the KV cache; default both.",
        show_default=False)] = None,
    modes: Annotated[Optional[str], _opt(
        "--modes", metavar="KINDS", help="KV cache kinds to time side by side: dynamic,static,none (any of them).",
        show_default=False)] = None,
    prompt: Annotated[Optional[str], _opt(
        "--prompt", "-p", help="Prompt text (default: the book's apology-email prompt).", show_default=False)] = None,
    prompt_tokens: Annotated[Optional[int], _opt(
        "--prompt-tokens", help="Use a prompt of exactly N tokens instead.", show_default=False)] = None,
    new_tokens: Annotated[int, _opt("--new-tokens", "-n", help="Tokens to generate per run (exactly N).")] = 100,
    warmup: Annotated[int, _opt("--warmup", help="Uncounted warm-up runs per mode.")] = 1,
    repeat: Annotated[int, _opt("--repeat", "-r", help="Timed runs per mode.")] = 3,
    sweep: Annotated[Optional[str], _opt(
        "--sweep", help="Several lengths instead of --new-tokens, e.g. 32,128,512: how time grows (log-log slope).",
        show_default=False)] = None,
    bandwidth: Annotated[Optional[float], _opt(
        "--bandwidth", help="GPU memory bandwidth in GB/s for the speed-of-light line (default: a table).",
        show_default=False)] = None,
    random_weights: Annotated[bool, _opt(
        "--random-weights", help="Build the model from its config with random weights (no download).",
        panel=MODEL_PANEL)] = False,
    layers: Annotated[Optional[int], _opt(
        "--layers", help="With --random-weights: keep only N layers, so a big architecture fits a small machine.",
        show_default=False, panel=MODEL_PANEL)] = None,
    reference: Annotated[bool, _opt(
        "--reference/--no-reference", help="Also time transformers' model.generate for the same tokens.")] = True,
    compile: Annotated[bool, _opt(
        "--compile", help="Decode with a torch.compile'd step over a static KV cache (compiled in the warm-up).")] = False,
    json: JsonOpt = False,
    *,
    spec: LoadSpec,
    keep: Keep,
    remote: Remote,
) -> None:
    """Time generation with and without the KV cache: totals, first token, tokens/s, memory, speed of light."""
    from lookinside.ui.bench import bench_view, tell_progress  # deferred: rich
    from lookinside.ui.console import show  # deferred: rich

    settings = BenchSettings(new_tokens=new_tokens, prompt=prompt, prompt_tokens=prompt_tokens,
                             modes=modes_for(cache, modes), warmup=warmup, repeat=repeat, sweep=parse_sweep(sweep),
                             bandwidth_gbs=bandwidth, reference=reference, compile=compile)
    if remote.endpoint:
        local_only = {"--cache/--no-cache": cache is not None, "--modes": modes is not None, "--sweep": bool(sweep),
                      "--random-weights": random_weights, "--bandwidth": bandwidth is not None, "--compile": compile}
        given = [flag for flag, used in local_only.items() if used]
        if given:
            raise BadInput(f"{', '.join(given)} need the model here: a server keeps its own KV cache and weights")
        from lookinside.core.bench.stream import stream_bench  # deferred: bench/report.py, 8 ms (llm --help)
        from lookinside.ui.bench import remote_bench_view  # deferred: rich

        report = stream_bench(open_backend(spec, remote), settings, progress=tell_progress)
        show(report, remote_bench_view, as_json=json, keep=keep)
        return
    from lookinside.core.bench.run import run_bench  # deferred: torch

    lm = load_here(replace(spec, random_weights=random_weights, layers=layers))
    report = run_bench(lm, settings, lm.notes, random_weights=random_weights, progress=tell_progress)
    show(report, bench_view, as_json=json, keep=keep)
