"""The `lens` view: what each layer would predict if it were the last."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lookinside.ui.text import bar, prob_style, visible
from lookinside.ui.tokens import shown

if TYPE_CHECKING:
    from lookinside.core.inside.lens import LogitLens
    from lookinside.core.records import Candidate


def depth_name(layer: int) -> str:
    """Layer 0 is the embeddings; layer i is the stream after block i-1 (hidden_states[i])."""
    return "embeddings" if layer == 0 else f"after block {layer - 1}"


def _guess(guess: Candidate, width: int = 12) -> Text:
    return Text.assemble((visible(guess.token)[:width], "bold"), (f" {guess.prob:.2f}".replace("0.", "."), "dim"))


def lens_table(result: LogitLens) -> Table:
    """One row per depth: the top tokens, and how the final answer's probability and rank grow."""
    answer = visible(result.answer.token)
    table = Table(expand=False)
    table.add_column("layer", justify="right", no_wrap=True)
    table.add_column("top token", no_wrap=True)
    if len(result.rows[0].top) > 1:
        table.add_column("runners-up", no_wrap=True)
    table.add_column(f"p({answer})", justify="right", no_wrap=True)
    table.add_column("", min_width=8, no_wrap=True)
    for row in result.rows:
        top = row.top[0]
        hit = top.id == result.answer.id
        cells: list[Any] = [
            str(row.layer),
            Text.assemble((visible(top.token), "bold green" if hit else "bold"), (f" {top.prob:.3f}", prob_style(top.prob))),
        ]
        if len(row.top) > 1:
            cells.append(Text("  ").join(_guess(g) for g in row.top[1:]))
        style = prob_style(row.answer_prob)
        rank = f" #{row.answer_rank}" if row.answer_rank > 1 else ""
        cells += [Text.assemble((rank, "dim"), (f" {row.answer_prob:.3f}", style)), Text(bar(row.answer_prob, 8), style=style)]
        table.add_row(*cells)
    return table


def lens_grid(result: LogitLens) -> Table:
    """Depth by position: the top token every position predicts at every depth (colour: its probability)."""
    assert result.grid is not None  # only called with --all-positions
    table = Table(expand=False, title="top-1 next token by layer (rows) and position (columns)", title_justify="left")
    table.add_column("layer", justify="right", no_wrap=True, min_width=5)
    for token in result.tokens:
        table.add_column(Text(f"{token.index} {shown(token)[:10]}", style="dim"), no_wrap=True, max_width=12)
    for layer, guesses in enumerate(result.grid):
        table.add_row(str(layer), *(Text(visible(g.token)[:12], style=prob_style(g.prob)) for g in guesses))
    return table


def verdict(result: LogitLens) -> Text:
    """When the final answer first appears on top, and from where it stays."""
    answer = visible(result.answer.token)
    first, settled = result.first_top1, result.settled
    text = Text.assemble(("final answer ", "dim"), (answer, "bold green"), (f" ({result.answer.prob:.3f})", "dim"))
    if first is None:  # cannot happen for the last layer, but a view must not assume it
        return text
    text.append(f": top-1 first at layer {first} ({depth_name(first)})", style="")
    if settled is not None and settled != first:
        text.append(f", and stays on top from layer {settled}")
    return text


def lens_view(result: LogitLens) -> RenderableType:
    """The whole `lens` screen."""
    at = result.tokens[result.position]
    header = Text.assemble(
        ("model ", "dim"), (result.model, "bold"),
        (f"   the next token after position {result.position} ({shown(at)}), read at every layer", "dim"),
    )
    note = Text(f"each layer → {result.norm or 'no final norm found'} → LM head → softmax;  #n: rank\n"
                "layer 0 is the embeddings; layer i is the residual stream after block i-1 (hidden_states[i])",
                style="dim")
    parts: list[RenderableType] = [header, lens_table(result), note, verdict(result)]
    if result.grid is not None:
        parts += [Text(), lens_grid(result)]
    return Group(*parts)
