"""The `bench` views: header, the cache on/off table, speed of light, a latency chart, the sweep.

Pure functions from a `BenchReport` to Rich renderables (its JSON is the record itself, core/wire.py);
the chart is drawn with characters only, so it reads the same in a pipe.
"""

from __future__ import annotations

import statistics
import sys
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from lookinside.ui.console import stderr_console

if TYPE_CHECKING:
    from lookinside.core.bench.report import BenchReport, ModeResult, ReferenceRun, RemoteBenchReport, SpeedOfLight

CACHE_MARK, NO_CACHE_MARK, BOTH_MARK = "•", "×", "◆"
CACHE_STYLE, NO_CACHE_STYLE = "green", "red"


def tell_progress(message: str) -> None:
    """A dim progress line on stderr, only when a person is watching it."""
    if sys.stderr.isatty():
        stderr_console().print(f"[dim]{message}…[/]")


def seconds(value: float | None) -> str:
    """0.0123 -> '12.3 ms', 2.5 -> '2.50 s'."""
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def span(low: float, high: float) -> str:
    """A range in one unit when both ends share it: '85.5–94.1 ms'."""
    a, b = seconds(low), seconds(high)
    unit_a, unit_b = a.rpartition(" ")[2], b.rpartition(" ")[2]
    return f"{a.rpartition(' ')[0]}–{b}" if unit_a == unit_b and " " in a else f"{a} – {b}"


def size(value: float | None) -> str:
    """Bytes in binary units: 114688 -> '112.0 KiB'."""
    if value is None:
        return "–"
    if value < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def count(value: int) -> str:
    """A parameter count: 3821079552 -> '3.82B'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def header_grid(report: BenchReport) -> Table:
    """Model, device, dtype, attention, versions and what was run."""
    h, first = report.header, report.runs[0]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    weights = f"random weights, {h.layers} layers" if h.random_weights else f"{h.layers} layers"
    grid.add_row("model", f"[bold]{escape(h.model)}[/] · {count(h.parameters)} parameters ({weights})")
    reason = f" ({h.threads_reason})" if h.threads_reason else ""
    threads = f" · {_plural(h.threads, 'thread')}{reason}" if h.device == "cpu" else ""
    grid.add_row("device", escape(f"{h.device} · {h.device_name}{threads}"))
    grid.add_row("dtype", f"{h.dtype} · attention {h.attention} · torch {h.torch_version} · "
                          f"transformers {h.transformers_version}")
    grid.add_row("run", f"prompt {first.prompt_tokens} tokens · {first.new_tokens} new tokens, greedy, end tokens "
                        f"ignored · {_plural(len(first.step_seconds), 'timed run')} after warm-up")
    return grid


def _column(run: ModeResult) -> list[str]:
    total = run.total_s
    return [
        seconds(total.median),
        span(total.min, total.max),
        seconds(run.ttft_s),
        f"{run.decode_tok_s:.1f}" if run.decode_tok_s is not None else "–",
        seconds(run.itl_p50_s),
        seconds(run.itl_p90_s),
        size(run.kv_cache_bytes) if run.cached else "none kept",
        size(run.kv_cache_measured_bytes) if run.cached else "–",
        size(run.peak_memory_bytes),
    ]


def _reference_column(ref: ReferenceRun, rows: int) -> list[str]:
    total = ref.total_s
    cells = [seconds(total.median), span(total.min, total.max), "–", f"{ref.tok_s:.1f}*"]
    return cells + ["–"] * (rows - len(cells))


COLUMN_TITLES = {"dynamic": "with cache", "static": "static cache", "none": "no cache"}
REFERENCE_TITLES = {"dynamic": "generate()", "static": "generate(static)", "none": "generate(no cache)"}
SWEEP_TITLES = {"dynamic": "with KV cache", "static": "static KV cache", "none": "without cache"}
MODE_WORDS = {"dynamic": "cached", "static": "static", "none": "uncached"}


def _style(cache: str) -> str:
    return NO_CACHE_STYLE if cache == "none" else CACHE_STYLE


def runs_table(report: BenchReport) -> Table:
    """One column per mode (and the reference), one row per measurement."""
    table = Table(title="Generation time", title_justify="left")
    table.add_column("")
    labels = ["total, median", "total, min–max", "TTFT (prefill)", "decode tokens/s", "inter-token p50",
              "inter-token p90", "KV cache, config", "KV, measured", _memory_label(report)]
    columns = []
    for run in report.runs:
        table.add_column(COLUMN_TITLES[run.cache], justify="right", style=_style(run.cache))
        columns.append(_column(run))
    if report.reference is not None:
        table.add_column(REFERENCE_TITLES[report.reference.cache], justify="right")
        columns.append(_reference_column(report.reference, len(labels)))
        table.caption = "generate(): transformers' model.generate; *prefill included"
    for index, label in enumerate(labels):
        table.add_row(label, *(column[index] for column in columns))
    return table


def _memory_label(report: BenchReport) -> str:
    return "peak memory (CUDA)" if report.header.device.startswith("cuda") else "peak memory (RSS)"


def verdict(report: BenchReport) -> Text:
    """Speedup, and whether both modes (and the reference) chose the same tokens."""
    line = Text()
    if report.speedup is not None:
        line.append("speedup: ")
        line.append(f"{report.speedup:.2f}×", style="bold")
        line.append(" with the KV cache (median total time)\n")
    checks = []
    if report.same_tokens is not None:
        checks.append((" vs ".join(MODE_WORDS[run.cache] for run in report.runs), report.same_tokens))
    if report.reference is not None:
        checks.append(("ours vs model.generate", report.reference.same_tokens))
    if checks:
        line.append("same token ids: ")
        for index, (label, same) in enumerate(checks):
            line.append(("  " if index else "") + f"{label} ")
            line.append("yes" if same else "NO", style="green" if same else "bold red")
    return line


def light_line(light: SpeedOfLight, mode: str = "") -> Text:
    """Bytes per decode step over the bandwidth: how close decode is to what memory allows."""
    line = Text()
    line.append(f"speed of light{f' ({mode})' if mode else ''}: ", style="bold")
    line.append(f"each cached decode step reads {size(light.bytes_per_token)} (weights + KV cache); "
                f"achieved {light.achieved_gbs:.1f} GB/s")
    if light.share is not None and light.bandwidth.gbs is not None:
        line.append(f" = {light.share:.1%}", style="bold red" if light.share > 1 else "bold")
        line.append(f" of {light.bandwidth.gbs:.0f} GB/s ({light.bandwidth.source}); at best "
                    f"{light.best_tok_s:.0f} tokens/s")
    else:
        line.append(" (give --bandwidth GB/s to compare with what the memory allows)", style="dim")
    return line


def latency_chart(runs: tuple[ModeResult, ...], width: int = 64, height: int = 10) -> Text:
    """Per-token decode latency against position: flat with the cache, growing without it."""
    series = [(run, _bucket(run.per_position_s[1:], width)) for run in runs]
    series = [(run, points) for run, points in series if points]
    if not series:
        return Text("(one token per run: no decode steps to chart)", style="dim")
    top = max(max(points) for _, points in series) or 1.0
    columns = max(len(points) for _, points in series)
    grid = [[" "] * columns for _ in range(height)]
    styles = [[""] * columns for _ in range(height)]
    for run, points in series:
        mark, style = (CACHE_MARK if run.cached else NO_CACHE_MARK), _style(run.cache)
        for x, value in enumerate(points):
            y = height - 1 - round(value / top * (height - 1))
            both = grid[y][x] not in (" ", mark)
            grid[y][x], styles[y][x] = (BOTH_MARK, "yellow") if both else (mark, style)
    text = Text()
    text.append("per-token latency by position (decode steps; the prefill is left out)\n", style="bold")
    labelled = (0, height // 2, height - 1)
    labels = [seconds(top * (height - 1 - y) / (height - 1)) if y in labelled else "" for y in range(height)]
    label_width = max(len(label) for label in labels)
    for y, label in enumerate(labels):
        text.append(f"{label:>{label_width}} ┤", style="dim")
        for x in range(columns):
            text.append(grid[y][x], style=styles[y][x] or None)
        text.append("\n")
    first = runs[0]
    start, end = str(first.prompt_tokens + 1), str(first.prompt_tokens + first.new_tokens - 1)
    room = columns - len(start) - len(end)
    middle = "position →".center(room) if room >= len("position →") + 2 else " " * max(room, 1)
    text.append(" " * label_width + " └" + "─" * columns + "\n", style="dim")
    text.append(" " * (label_width + 2) + start + middle + end + "\n", style="dim")
    text.append(" " * (label_width + 2))
    text.append(f"{CACHE_MARK} with KV cache", style=CACHE_STYLE)
    text.append("   ")
    text.append(f"{NO_CACHE_MARK} without", style=NO_CACHE_STYLE)
    text.append("   ")
    text.append(f"{BOTH_MARK} both", style="yellow")
    return text


def _bucket(values: list[float], width: int) -> list[float]:
    """At most `width` points: medians of consecutive runs of positions."""
    if len(values) <= width:
        return list(values)
    edges = [round(i * len(values) / width) for i in range(width + 1)]
    return [statistics.median(values[a:b]) for a, b in zip(edges, edges[1:]) if b > a]


def sweep_table(report: BenchReport) -> Table:
    """Median total time per length and mode, and the log-log slope of time against length."""
    table = Table(title="Time against length (median total)", title_justify="left")
    table.add_column("new tokens", justify="right")
    for line in report.sweep:
        table.add_column(SWEEP_TITLES[line.cache], justify="right", style=_style(line.cache))
    for index, length in enumerate(report.sweep[0].lengths):
        table.add_row(str(length), *(seconds(line.medians[index]) for line in report.sweep))
    table.add_row("log-log slope (fit)", *(f"{line.slope:.2f}" for line in report.sweep), style="bold")
    table.add_row("slope, last two", *(f"{line.slope_last:.2f}" for line in report.sweep), style="bold")
    table.caption = "1 = time grows linearly with length; 2 = quadratically (every step recomputes everything)"
    return table


def bench_view(report: BenchReport) -> RenderableType:
    """The whole bench: header, table, verdict, speed of light, chart, sweep and notes."""
    parts: list[RenderableType] = [header_grid(report), Text(), runs_table(report), verdict(report)]
    lit = [r for r in report.runs if r.speed_of_light is not None]
    parts += [light_line(r.speed_of_light, COLUMN_TITLES[r.cache] if len(lit) > 1 else "") for r in lit]
    parts += [Text(), latency_chart(report.runs)]
    if report.sweep:
        parts += [Text(), sweep_table(report)]
    parts += [Text(f"warning: {warning}", style="bold red") for warning in report.warnings]
    parts += [noise_warning(report)] if report.noisy else []
    parts += [Text(f"note: {note}", style="yellow") for note in report.notes]
    return Group(*parts)


def noise_warning(report: BenchReport) -> Text:
    """Why the numbers look disturbed, and what to try."""
    repeat = max(2 * len(report.runs[0].step_seconds), 7)
    lines = ["warning: the machine looks busy, so these numbers are noisy:"]
    lines += [f"  - {reason}" for reason in report.noise]
    lines.append(f"  re-run with --repeat {repeat}, with other programs closed, or with --threads 1")
    return Text("\n".join(lines), style="yellow")


def remote_bench_view(report: RemoteBenchReport) -> RenderableType:
    """`llm bench --endpoint`: the streamed timing, the prefix cache, and what a server does not show."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("model", f"[bold]{escape(report.model)}[/] served by {escape(report.server)} "
                          f"at {escape(report.endpoint)}")
    grid.add_row("run", f"{report.new_tokens} new tokens, greedy, streamed · "
                        f"{_plural(len(report.step_seconds), 'timed stream')} after warm-up · "
                        "times include the network")
    table = Table(title="Streamed generation", title_justify="left")
    table.add_column("")
    table.add_column("server", justify="right", style=CACHE_STYLE)
    ttft, total = report.ttft_s, report.total_s
    rows = [("total, median", seconds(total.median)), ("total, min–max", span(total.min, total.max)),
            ("TTFT", seconds(ttft.median)), ("TTFT, min–max", span(ttft.min, ttft.max)),
            ("decode tokens/s", f"{report.decode_tok_s:.1f}" if report.decode_tok_s is not None else "–"),
            ("inter-token p50", seconds(report.itl_p50_s)), ("inter-token p90", seconds(report.itl_p90_s))]
    for label, value in rows:
        table.add_row(label, value)
    parts: list[RenderableType] = [grid, Text(), table]
    prefix = report.prefix
    if prefix is not None and prefix.speedup is not None:
        line = Text()
        line.append("prefix cache: ", style="bold")
        tokens = f"{prefix.prompt_tokens}-token" if prefix.prompt_tokens else "long"
        line.append(f"the same {tokens} prompt, one new token: cold {seconds(statistics.median(prefix.cold_s))}, "
                    f"again {seconds(statistics.median(prefix.warm_s))} = ")
        line.append(f"{prefix.speedup:.2f}×", style="bold")
        line.append(" (the server reuses the prompt's KV cache)")
        parts.append(line)
    if report.bursts:
        parts.append(Text(f"warning: {report.bursts} of {len(report.step_seconds)} streams arrived in bursts (most "
                          "tokens less than 1 ms apart): the server held tokens back and sent them together, so "
                          "their TTFT and inter-token times show its buffering; re-run with more --repeat",
                          style="yellow"))
    parts += [Text(f"no {what.replace('_', ' ')}: {why}", style="dim") for what, why in report.unavailable.items()]
    return Group(*parts)
