"""The `next-token` view: prompt tokens, forward-pass shapes, the top-k table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lookinside.ui.text import bar, fmt_prob, prob_style, visible

if TYPE_CHECKING:
    from lookinside.core.records import NextToken, Piece


def tokens_line(tokens: Sequence[Piece], spelling: Literal["piece", "text"] = "piece") -> Text:
    """The prompt as pieces (or their text) with their ids: `<s>·1  ▁The·450 ...`."""
    line = Text()
    for i, token in enumerate(tokens):
        line.append(visible(getattr(token, spelling)), style="bold cyan" if i % 2 == 0 else "bold magenta")
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
    table.add_column("id", justify="right", style="dim")
    table.add_column("prob", justify="right")
    if result.temperature is not None:
        table.add_column(f"prob @T={result.temperature:g}", justify="right")
    table.add_column("logit", justify="right")
    table.add_column("", min_width=20)
    for c in result.top:
        style = prob_style(c.prob)
        row = [str(c.rank), visible(c.token), str(c.id), Text(fmt_prob(c.prob), style=style)]
        if c.prob_at_temperature is not None:
            row.append(Text(fmt_prob(c.prob_at_temperature), style=prob_style(c.prob_at_temperature)))
        row += [f"{c.logit:.2f}", Text(bar(c.prob), style=style)]
        table.add_row(*row)
    return table


def next_token_view(result: NextToken) -> RenderableType:
    """The whole `next-token` screen."""
    header = Text.assemble(("model ", "dim"), (result.model, "bold"), (f"   context {result.context_length}", "dim"))
    return Group(
        header,
        Text.assemble((f"prompt tokens ({len(result.tokens)}): ", "dim"), tokens_line(result.tokens)),
        Text("forward pass", style="dim"),
        shapes_grid(result.shapes),
        Text(),
        top_table(result),
    )


def next_token_json(result: NextToken) -> dict[str, Any]:
    """The result as the documented JSON object."""
    return {
        "model": result.model,
        "prompt": result.prompt,
        "context_length": result.context_length,
        "tokens": [{"id": t.id, "text": t.piece} for t in result.tokens],
        "shapes": result.shapes,
        "temperature": result.temperature,
        "top": [
            {"rank": c.rank, "id": c.id, "token": c.token, "prob": c.prob, "logit": c.logit}
            | ({"prob_at_temperature": c.prob_at_temperature} if c.prob_at_temperature is not None else {})
            for c in result.top
        ],
    }
