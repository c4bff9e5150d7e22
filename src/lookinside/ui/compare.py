"""The `compare` view: the greedy run beside the sampled runs, each token coloured by its probability.

Panels sit side by side when the console is wide enough and stack when it is not;
the decision is made at render time from the console's width, so the view itself
stays a pure function of the comparison.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from lookinside.ui.text import prob_style

if TYPE_CHECKING:
    from lookinside.core.records import Comparison, Generation

PANEL_MIN_WIDTH = 34
ENDINGS = {"eos": "[end]", "stop": "[stop string]", "length": "…", "interrupted": "[interrupted]"}


class Adaptive:
    """Renderables in as many equal columns as the width allows (one column: stacked)."""

    def __init__(self, items: list[RenderableType], min_width: int = PANEL_MIN_WIDTH) -> None:
        self.items = items
        self.min_width = min_width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        columns = max(1, min(len(self.items), options.max_width // self.min_width))
        grid = Table.grid(expand=True, padding=(0, 1))
        for _ in range(columns):
            grid.add_column(ratio=1)
        for start in range(0, len(self.items), columns):
            row = self.items[start : start + columns]
            grid.add_row(*row, *([""] * (columns - len(row))))
        yield grid


def run_text(run: Generation, departs: int | None = None, lead: str = "") -> Text:
    """The run's text after a dim `lead`, each token in its probability's colour; the departing token underlined."""
    text = Text(lead, style="dim")
    for step in run.steps:
        style = prob_style(step.prob) + (" underline bold" if step.index == departs else "")
        text.append(step.text, style=style)
    ending = ENDINGS.get(run.finish or "", "")
    text.append(ending, style="dim")
    return text


def run_stats(run: Generation, departs: int | None, is_greedy: bool, seed: int | None = None) -> Text:
    """Seed, mean log-probability, perplexity and where the run leaves the greedy path, a line each."""
    lines: list[tuple[str, str]] = [(f"seed {seed}", "bold")] if seed is not None else []
    lines.append((f"log-prob/token {_logprob(run.mean_logprob)}", ""))
    lines.append((f"perplexity {_number(run.perplexity)}", ""))
    if is_greedy:
        lines.append(("argmax at every step", "cyan"))
    elif departs is None:
        lines.append(("same as greedy", "green"))
    else:
        lines.append((f"departs from greedy at token {departs + 1}", "yellow"))
    return Text("\n").join(Text(words, style=style) for words, style in lines)


def run_panel(
    title: str, run: Generation, departs: int | None, is_greedy: bool, lead: str = "", seed: int | None = None
) -> Panel:
    """One run as a panel: coloured text above, its numbers below, its length and ending underneath."""
    body = Group(run_text(run, departs, lead), Text(), run_stats(run, departs, is_greedy, seed))
    subtitle = f"{len(run.steps)} tokens · {run.finish or 'unknown'}"  # a server need not say why it stopped
    return Panel(body, title=title, title_align="left", subtitle=subtitle, subtitle_align="right",
                 border_style="cyan" if is_greedy else "magenta")


def settings_line(result: Comparison) -> Text:
    """The effective settings: how the samples were drawn and with which seeds."""
    params = result.params
    first, last = params.seed or 0, (params.seed or 0) + len(result.samples) - 1
    seeds = f"seed {first}" if first == last else f"seeds {first}..{last} (--seed {first} + i)"
    sampling = params.updated(seed=None).describe()
    penalty = params.repetition_penalty
    greedy = "argmax" + (f", repetition_penalty={penalty:g}" if penalty != 1 else "")
    return Text.assemble(
        ("samples: ", "dim"), (sampling, "bold"), ("   ", ""), (seeds, "bold"), ("\n", ""),
        ("greedy: ", "dim"), (greedy, ""), ("   max new tokens: ", "dim"), (str(result.settings.max_new_tokens), ""),
    )


def legend() -> Text:
    """What the token colours mean."""
    line = Text("colour = the token's raw probability: ", style="dim")
    for label, p in (("≥ 0.7", 0.9), ("≥ 0.4", 0.5), ("≥ 0.1", 0.2), ("< 0.1", 0.01)):
        line.append(label, style=prob_style(p))
        line.append("  ")
    return line


def compare_view(result: Comparison) -> RenderableType:
    """The whole `compare` screen."""
    lead = "" if result.chat else prompt_tail(result.prompt)
    panels = [run_panel("greedy", result.greedy, None, True, lead)]
    panels += [
        run_panel(f"sample {i + 1}", run, result.departs(run), False, lead, seed)
        for i, (run, seed) in enumerate(zip(result.samples, result.seeds))
    ]
    count = f"{len(result.prompt_ids)} tokens" if result.prompt_ids else "tokenized by the server"
    header = Text.assemble(
        ("model ", "dim"), (result.model, "bold"), ("   prompt ", "dim"), (repr(result.prompt), ""),
        (f"   ({count}{', chat template' if result.chat else ''})", "dim"),
    )
    return Group(header, settings_line(result), Adaptive(panels), legend())


def prompt_tail(prompt: str, limit: int = 40) -> str:
    """The end of a plain prompt, shown dim before each continuation so it reads as a sentence."""
    return prompt if len(prompt) <= limit else "…" + prompt[-limit:]


def _number(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "∞"


def _logprob(x: float) -> str:
    # -0.000 would hide the difference between a sure run and a very sure one
    return f"{x:.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:.1e}"
