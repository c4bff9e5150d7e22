"""The intervention views: `ablate`, `patch` and `steer`, each a record -> Rich renderable.

Heat maps carry a shade glyph beside (or instead of) each number, so they still read in plain
text (a pipe, a file, NO_COLOR); past `NUMBERS_UP_TO` columns a cell is the glyph alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.color import Color
from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

from lookinside.ui.attention import heat_rgb, shade
from lookinside.ui.text import fmt_prob, prob_style, visible
from lookinside.ui.tokens import shown

if TYPE_CHECKING:
    from lookinside.core.inside.interventions.records import AblationResult, Grid, PatchResult, Shift, SteerResult
    from lookinside.core.records import Candidate, Piece

VERDICT_POSITIONS = 4  # positions named in the patching verdict
NUMBERS_UP_TO = 12  # columns; a wider heat map shows glyphs only, two characters a cell, every 4th numbered


def short(prob: float) -> str:
    """A probability in four characters: .999, .050, 1.00."""
    return "1.00" if prob >= 0.9995 else f"{prob:.3f}"[1:]


def heat_cell(value: float, heat: float, numbers: bool) -> Text:
    """One cell: the glyph for `heat` (0..1) coloured by it, and the value when there is room."""
    style = Style(color=Color.from_rgb(*heat_rgb(heat)))
    return Text(shade(heat) + (short(value) if numbers else shade(heat)), style=style)


def _grid_table(first: str, columns: list[str], numbers: bool) -> Table:
    """A borderless heat map: a label column, then one column per cell (narrow and sparsely numbered when many)."""
    table = Table(expand=False, box=None, padding=(0, 1, 0, 0) if numbers else (0, 0, 0, 0))
    table.add_column(first, no_wrap=True)
    for i, name in enumerate(columns):
        label = name if numbers else (name if i % 4 == 0 else "")
        table.add_column(label, justify="right" if numbers else "left", no_wrap=True, min_width=None if numbers else 2)
    return table


def _header(model: str, what: str) -> Text:
    return Text.assemble(("model ", "dim"), (model, "bold"), (f"   {what}", "dim"))


def _prompt_line(label: str, tokens: Sequence[Piece], differs: set[int] | None = None) -> Text:
    line = Text(f"{label:<8}", style="dim")
    for token in tokens:
        line.append(shown(token), style="bold yellow" if differs and token.index in differs else "bold")
        line.append(" ")
    return line


# ---- patch


def patch_map(result: PatchResult) -> Table:
    """Positions (rows, with their tokens) by layers (columns): the target's probability with that cell patched."""
    layers = len(result.prob)
    numbers = layers <= NUMBERS_UP_TO
    differs = {t.index for t, c in zip(result.tokens, result.clean_tokens) if t.id != c.id}
    first = f"p({visible(result.target.token)})  layer →" if numbers else "layer → "
    table = _grid_table(first, [str(layer) for layer in range(layers)], numbers)
    for position, token in enumerate(result.tokens):
        mark = "*" if position in differs else " "
        label = Text(f"{position:>2}{mark}{shown(token)[:12 if numbers else 8]} ",
                     style="bold yellow" if mark == "*" else "")
        table.add_row(label, *(heat_cell(result.prob[layer][position], result.prob[layer][position], numbers)
                               for layer in range(layers)))
    return table


def _ranges(layers: list[int]) -> str:
    """[0, 1, 2, 4] -> "0-2, 4"."""
    spans: list[list[int]] = []
    for layer in layers:
        if spans and spans[-1][1] == layer - 1:
            spans[-1][1] = layer
        else:
            spans.append([layer, layer])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def restored(result: PatchResult) -> dict[int, list[int]]:
    """Per position, the layers where the patch gives back at least half of what corruption took away."""
    gap = result.clean_prob - result.corrupt_prob
    found: dict[int, list[int]] = {}
    for layer, row in enumerate(result.prob):
        for position, p in enumerate(row):
            if gap > 0 and (p - result.corrupt_prob) >= gap / 2:
                found.setdefault(position, []).append(layer)
    return found


def patch_verdict(result: PatchResult) -> Text:
    """Which cells give the clean answer back; for the stream, the check that the last cell is the clean run."""
    text = Text()
    if result.part == "resid":
        text.append(f"last layer, last position: {fmt_prob(result.prob[-1][-1])} (the clean run: "
                    f"{fmt_prob(result.clean_prob)})\n", style="dim")
    found = restored(result)
    if not found:
        return text.append("no single cell gives back half of what the corruption took")
    text.append("half or more given back at: ")
    cells = sorted(found.items())
    text.append("; ".join(f"position {pos} {shown(result.tokens[pos])} layer{'s' if len(layers) > 1 else ''} "
                          f"{_ranges(layers)}" for pos, layers in cells[:VERDICT_POSITIONS]))
    if len(cells) > VERDICT_POSITIONS:
        text.append(f"; and at {len(cells) - VERDICT_POSITIONS} more positions")
    return text


def patch_view(result: PatchResult) -> RenderableType:
    """The whole `patch` screen: both prompts, both baselines, the heat map and what it says."""
    differs = {t.index for t, c in zip(result.tokens, result.clean_tokens) if t.id != c.id}
    what = {"resid": "residual stream", "attn": "attention output", "mlp": "MLP output"}[result.part]
    target = visible(result.target.token)
    baselines = Text.assemble(
        ("target ", "dim"), (target, "bold"),
        ("   clean ", "dim"), (fmt_prob(result.clean_prob), prob_style(result.clean_prob)),
        ("   corrupted ", "dim"), (fmt_prob(result.corrupt_prob), prob_style(result.corrupt_prob)))
    if result.part == "resid":
        key = "layer 0 is the embeddings' output, layer i the stream after block i-1"
    else:
        key = f"layer i is block i's {what}"
    note = Text(f"a cell: p({target}) on the corrupted prompt with the clean run's {what} put back at that "
                f"(position, layer); {key}; * marks where the prompts differ", style="dim")
    return Group(_header(result.model, f"activation patching: the {what}"),
                 _prompt_line("clean", result.clean_tokens, differs), _prompt_line("corrupt", result.tokens, differs),
                 baselines, Text(), patch_map(result), note, patch_verdict(result))


# ---- before and after


def shift_table(shift: Shift, before: str = "before", after: str = "after") -> Table:
    """The two next-token tables side by side, the original top token marked in both."""
    table = Table(expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column(before, no_wrap=True)
    table.add_column("prob", justify="right")
    table.add_column(after, no_wrap=True)
    table.add_column("prob", justify="right")
    for b, a in zip(shift.before, shift.after):
        table.add_row(str(b.rank), _token(b, shift.top), Text(fmt_prob(b.prob), style=prob_style(b.prob)),
                      _token(a, shift.top), Text(fmt_prob(a.prob), style=prob_style(a.prob)))
    return table


def _token(candidate: Candidate, top: Candidate) -> Text:
    return Text(visible(candidate.token), style="bold green" if candidate.id == top.id else "bold")


def shift_line(shift: Shift) -> Text:
    """KL(before || after), and what became of the original top token."""
    kl = f"{shift.kl:.4f} nats" if shift.kl is not None else f"none ({shift.kl_note})"
    return Text.assemble(
        ("KL(before || after) ", "dim"), (kl, "bold"), ("\n", ""),
        (visible(shift.top.token), "bold green"),
        (f" {fmt_prob(shift.top.prob)} → {fmt_prob(shift.top_after_prob)} ({shift.change:+.4f}), rank 1 → "
         + str(shift.top_after_rank), ""))


# ---- ablate


def sweep_map(grid: Grid, baseline: float) -> Table:
    """Rows by columns of the top token's probability with one cell ablated; the shade is how much it fell."""
    numbers = len(grid.columns) <= NUMBERS_UP_TO
    table = _grid_table("", [c if numbers else c.removeprefix("head ") for c in grid.columns], numbers)
    for name, row in zip(grid.rows, grid.values):
        drops = [max(0.0, baseline - v) / baseline if baseline > 0 else 0.0 for v in row]
        table.add_row(name + ("" if numbers else " "), *(heat_cell(v, d, numbers) for v, d in zip(row, drops)))
    return table


def sweep_verdict(result: AblationResult) -> Text:
    """The cell whose ablation moves the top token most."""
    assert result.grid is not None  # only for a sweep
    cells = [(v, r, c) for r, row in zip(result.grid.rows, result.grid.values) for v, c in zip(row, result.grid.columns)]
    low, row, column = min(cells, key=lambda cell: cell[0])  # the first, in reading order, on a tie
    return Text(f"largest drop: {row}, {column}: {fmt_prob(result.top.prob)} → {fmt_prob(low)} "
                f"({low - result.top.prob:+.4f})")


def ablate_view(result: AblationResult) -> RenderableType:
    """The whole `ablate` screen: the tables side by side, or a sweep's heat map."""
    parts: list[RenderableType] = [_header(result.model, f"{result.mode} ablation"),
                                   _prompt_line("prompt", result.tokens)]
    if result.grid is not None:
        what = "each head alone" if result.sweep == "heads" else "each layer's attn, mlp and whole block alone"
        parts += [Text(f"p({visible(result.top.token)}) = {fmt_prob(result.top.prob)} as is; with {what} "
                       f"{result.mode}-ablated:", style="dim"),
                  sweep_map(result.grid, result.top.prob),
                  Text("the shade: how much of the top token's probability the ablation takes away", style="dim"),
                  sweep_verdict(result)]
    else:
        assert result.shift is not None
        parts += [Text.assemble(("ablated ", "dim"), (", ".join(result.ablated), "bold")), Text(),
                  shift_table(result.shift), shift_line(result.shift)]
    return Group(*parts)


# ---- steer


def steer_view(result: SteerResult) -> RenderableType:
    """The whole `steer` screen: what was added, both continuations, and the next-token shift."""
    minus = f" - {result.subtract!r}" if result.subtract is not None else ""
    seed = "greedy" if result.seed is None else f"seed {result.seed}"
    runs = Table(expand=False, show_lines=False)
    runs.add_column("unsteered", max_width=38)
    runs.add_column(f"steered ({seed}, both)", max_width=38)
    runs.add_row(Text(result.prompt, style="dim") + Text(result.unsteered, style="bold"),
                 Text(result.prompt, style="dim") + Text(result.steered, style="bold"))
    return Group(
        _header(result.model, "steering (activation addition)"),
        Text.assemble(("added ", "dim"), (f"{result.alpha:g} x ({result.add!r}{minus})", "bold"),
                      (f" at every position of layer {result.layer}   |v| = {result.norm:.2f}", "dim")),
        Text("v: the residual stream at the last position of each text; layer 0 is the embeddings' output, "
             "layer i the stream after block i-1", style="dim"),
        runs, Text(), shift_table(result.shift, "unsteered", "steered"), shift_line(result.shift))
