"""The `diff` views: the summary, KL by position as a chart, the text coloured by KL, the worst positions.

Pure functions from a `Diff` to Rich renderables (its JSON is the record itself, core/wire.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from lookinside.ui.text import fmt_prob, visible

if TYPE_CHECKING:
    from lookinside.core.inside.diff import Diff

# KL in nats: what each colour means. Below 0.001 the two are the same for any practical purpose.
KL_LEVELS = ((1e-3, "green"), (1e-2, "yellow"), (1e-1, "dark_orange"), (math.inf, "red"))
COLUMNS = "▁▂▃▄▅▆▇█"


def kl_style(kl: float) -> str:
    """A colour for one position's KL."""
    return next(style for limit, style in KL_LEVELS if kl < limit)


def diff_view(diff: Diff, width: int = 64) -> RenderableType:
    """Summary, chart, coloured text, worst positions, continuations."""
    return Group(header(diff), Text(), summary_table(diff), Text(), kl_chart(diff, width), Text(),
                 coloured_text(diff), Text(), worst_table(diff), Text(), continuations(diff))


def header(diff: Diff) -> Text:
    """What was compared with what, over how many tokens."""
    text = Text()
    text.append("A ", style="bold")
    text.append(f"{diff.model_a} ({diff.how_a})\n")
    text.append("B ", style="bold")
    text.append(f"{diff.model_b} ({diff.how_b})\n")
    chunks = math.ceil((diff.tokens - 1) / diff.chunk)
    text.append(f"{diff.tokens} tokens read by both (teacher forcing"
                f"{f', {chunks} chunks of {diff.chunk}' if chunks > 1 else ''}); "
                f"{len(diff.positions)} next-token distributions compared", style="dim")
    return text


def summary_table(diff: Diff) -> Table:
    """llama.cpp's KL-divergence report: KL statistics, same top-1, perplexities."""
    table = Table(title="How far B's predictions are from A's", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("KL(A‖B) mean", f"{diff.mean_kl:.2e}")
    table.add_row("KL median", f"{diff.median_kl:.2e}")
    table.add_row("KL p99", f"{diff.p99_kl:.2e}")
    table.add_row("KL max", f"{diff.max_kl:.2e}")
    table.add_row("same top-1", f"{diff.same_top1:.1%}")
    table.add_row(f"top-{diff.top_k} overlap", f"{sum(p.top_overlap for p in diff.positions) / len(diff.positions):.1%}")
    change = diff.perplexity_b / diff.perplexity_a - 1
    table.add_row("perplexity A → B", f"{diff.perplexity_a:.3f} → {diff.perplexity_b:.3f} ({change:+.2%})")
    table.caption = "KL in nats over each position's next-token distribution; 0 = identical"
    return table


def kl_chart(diff: Diff, width: int = 64, height: int = 6) -> Text:
    """KL by position: one column per position (or the largest of a few, on long texts)."""
    kls = diff.kls
    per = math.ceil(len(kls) / width)
    columns = [max(kls[i : i + per]) for i in range(0, len(kls), per)]
    top = max(columns) or 1.0
    text = Text()
    text.append("KL by position\n", style="bold")
    label = f"{top:.2g}"
    for row in range(height, 0, -1):
        text.append(f"{label if row == height else '':>8} ┤", style="dim")
        for value in columns:
            level = value / top * height
            cell = "█" if level >= row else COLUMNS[round((level - row + 1) * 7)] if level > row - 1 else " "
            text.append(cell, style=kl_style(value))
        text.append("\n")
    text.append(f"{'0':>8} └" + "─" * len(columns) + "\n", style="dim")
    span = f"{'position 0':<{len(columns) // 2}}{f'{len(kls) - 1}':>{len(columns) - len(columns) // 2}}"
    text.append(" " * 10 + span + (f"   (each column: the largest of {per})" if per > 1 else ""), style="dim")
    return text


def coloured_text(diff: Diff) -> Text:
    """The text, each next token coloured by the KL of its prediction."""
    text = Text()
    text.append("the text, each token coloured by the KL of its prediction\n", style="bold")
    if diff.positions:
        text.append(diff.positions[0].token, style="dim")
    for p in diff.positions:
        text.append(p.next_token.replace("▁", " "), style=kl_style(p.kl))
    text.append("\nKL ", style="dim")
    for limit, style in KL_LEVELS:
        text.append(f"< {limit:g}  " if limit != math.inf else "≥ 0.1", style=style)
    return text


def worst_table(diff: Diff) -> Table:
    """The positions where the two differ most, with both models' top candidates."""
    table = Table(title=f"The {min(10, len(diff.positions))} positions where they differ most", title_justify="left")
    for name, justify in (("pos", "right"), ("after", "left"), ("next", "left"), ("KL", "right"),
                          ("A's top 3", "left"), ("B's top 3", "left")):
        table.add_column(name, justify=justify)
    for p in diff.worst():
        table.add_row(str(p.index), escape(visible(p.token)), escape(visible(p.next_token)), f"{p.kl:.2e}",
                      _candidates(p.top_a), _candidates(p.top_b))
    return table


def _candidates(top: tuple[tuple[str, float], ...]) -> str:
    return "\n".join(f"{escape(visible(piece))} {fmt_prob(prob)}" for piece, prob in top)


def continuations(diff: Diff) -> Text:
    """Each model's greedy continuation from the end of the text, and where they part."""
    text = Text()
    text.append("greedy continuations from the end of the text\n", style="bold")
    text.append("A ", style="bold")
    text.append(f"{_said(diff.continuation_a)}\n")
    text.append("B ", style="bold")
    text.append(f"{_said(diff.continuation_b)}\n")
    text.append("identical" if diff.parts_at is None else f"they part at generated token {diff.parts_at}",
                style="green" if diff.parts_at is None else "yellow")
    return text


def _said(continuation: str) -> str:
    return repr(continuation) if continuation else "(an end token at once: the model thinks the text is finished)"
