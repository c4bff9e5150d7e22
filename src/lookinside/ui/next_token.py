"""The `next-token` view: prompt tokens, forward-pass shapes, the top-k table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lookinside.ui.text import bar, fmt_prob, prob_style, visible

if TYPE_CHECKING:
    from lookinside.core.records import NextToken, Piece


def tokens_line(tokens: Sequence[Piece], spelling: Literal["piece", "text"] = "piece", ids: bool = True) -> Text:
    """The prompt as pieces (or their text) with their ids: `<s>·1  ▁The·450 ...` (no ids where a server gave none)."""
    line = Text()
    for i, token in enumerate(tokens):
        line.append(visible(getattr(token, spelling)), style="bold cyan" if i % 2 == 0 else "bold magenta")
        if ids:
            line.append(f"·{token.id}", style="dim")
        line.append("  ")
    return line


def shapes_grid(shapes: dict[str, list[int]]) -> Table:
    """The forward pass in the book's terms, one stage a row, with real shapes."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column(style="bold")
    grid.add_column(style="dim")
    grid.add_row("input ids", str(shapes["input_ids"]), "(batch, tokens)")
    grid.add_row("hidden states", str(shapes["hidden_states"]), "(batch, tokens, d_model) after the last block")
    grid.add_row("logits", str(shapes["logits"]), "(batch, tokens, vocab) from the LM head")
    return grid


def top_table(result: NextToken) -> Table:
    """Rank, token, id, probability, logit and a bar for each candidate."""
    table = Table(title=f"Top {len(result.top)} next tokens", title_justify="left", expand=False)
    table.add_column("#", justify="right")
    table.add_column("token")
    ids, logits = "ids" not in result.unavailable, "logit" not in result.unavailable
    if ids:
        table.add_column("id", justify="right", style="dim")
    table.add_column("prob", justify="right")
    if result.temperature is not None:
        table.add_column(f"prob @T={result.temperature:g}", justify="right")
    if logits:
        table.add_column("logit", justify="right")
    table.add_column("", min_width=20)
    for c in result.top:
        style = prob_style(c.prob)
        row = [str(c.rank), visible(c.token), *([str(c.id)] if ids else []), Text(fmt_prob(c.prob), style=style)]
        if c.prob_at_temperature is not None:
            row.append(Text(fmt_prob(c.prob_at_temperature), style=prob_style(c.prob_at_temperature)))
        row += [*([f"{c.logit:.2f}"] if logits and c.logit is not None else []), Text(bar(c.prob), style=style)]
        table.add_row(*row)
    return table


def unavailable_lines(unavailable: dict[str, str]) -> list[Text]:
    """One dim line per thing this backend could not give, and why."""
    return [Text(f"no {what}: {why}", style="dim") for what, why in unavailable.items()]


def next_token_view(result: NextToken) -> RenderableType:
    """The whole `next-token` screen."""
    context = f"   context {result.context_length}" if result.context_length is not None else ""
    header = Text.assemble(("model ", "dim"), (result.model, "bold"), (context, "dim"))
    parts: list[RenderableType] = [header]
    if result.tokens:
        line = tokens_line(result.tokens, ids="ids" not in result.unavailable)
        parts.append(Text.assemble((f"prompt tokens ({len(result.tokens)}): ", "dim"), line))
    if result.shapes is not None:
        parts += [Text("forward pass", style="dim"), shapes_grid(result.shapes)]
    parts += [*unavailable_lines(result.unavailable), Text(), top_table(result)]
    return Group(*parts)
