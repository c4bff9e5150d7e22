"""The `attention` view: heat maps with query rows and key columns, and per-head habits.

Each cell's shade says how much the query (row) attends to the key (column); a dim
dot marks a key the causal mask hides. The shades are glyphs, not only colours,
so the map still reads in plain text (a pipe, a file, NO_COLOR).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.color import Color
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

from lookinside.ui.tokens import shown

if TYPE_CHECKING:

    from lookinside.core.inside.attention import AttentionMaps, HeadSummary

# (lowest weight, glyph): a cell gets the glyph of the last threshold it reaches
SHADES = ((0.0, " "), (0.02, "░"), (0.1, "▒"), (0.3, "▓"), (0.6, "█"))
MASKED = "·"
SMALL_MAPS_UP_TO = 24  # tokens; past this the grid of small maps is too wide to read
HEAT_MAP_UP_TO = 40  # tokens in one head's map; a longer prompt shows its last 40
LOW, HIGH = (40, 40, 90), (255, 220, 60)  # dark blue to warm yellow


def shade(weight: float) -> str:
    """The glyph for a weight in [0, 1]."""
    glyph = SHADES[0][1]
    for threshold, g in SHADES:
        if weight >= threshold:
            glyph = g
    return glyph


def heat_rgb(weight: float) -> tuple[int, int, int]:
    """A colour between dark blue (0) and yellow (1); the square root lifts small weights into view."""
    t = max(0.0, min(1.0, weight)) ** 0.5
    return tuple(round(a + (b - a) * t) for a, b in zip(LOW, HIGH))  # type: ignore[return-value]


def _cell(weight: float, masked: bool, width: int) -> Text:
    if masked:
        return Text(MASKED.center(width), style="dim")
    return Text(shade(weight) * width, style=Style(color=Color.from_rgb(*heat_rgb(weight))))


def heat_map(maps: AttentionMaps, head: int) -> Table:
    """One head at full size: a row per query token, a column per key (numbered), the top key at the end."""
    n = len(maps.tokens)
    shown_range = range(max(0, n - HEAT_MAP_UP_TO), n)
    table = Table.grid(padding=(0, 0))
    table.add_column(no_wrap=True)
    for _ in shown_range:
        table.add_column(width=3, no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_row(Text("query ↓   key →", style="dim"), *(Text(f"{k:>2} ", style="dim") for k in shown_range), "")
    weights = maps.weights[head]
    for q in shown_range:
        token, row = maps.tokens[q], weights[q]
        top = max(range(q + 1), key=lambda k: row[k])
        cells = [_cell(row[k], maps.masked(q, k), 2) + Text(" ") for k in shown_range]
        table.add_row(Text(f"{q:>2} {shown(token)[:12]}".ljust(16)), *cells,
                      Text(f" → {top} {shown(maps.tokens[top])} {row[top]:.2f}", style="dim"))
    return table


def token_key(maps: AttentionMaps) -> Text:
    """Which token each row and column of the small maps stands for."""
    text = Text("rows (queries) and columns (keys): ", style="dim")
    for token in maps.tokens:
        text.append(f"{token.index}", style="dim")
        text.append(f" {shown(token)}  ")
    return text


def small_map(maps: AttentionMaps, head: int) -> Group:
    """One head in one character per cell, for the grid of all heads."""
    lines = [Text(f"head {head}", style="bold")]
    for q, row in enumerate(maps.weights[head]):
        line = Text()
        for k in range(len(row)):
            line += _cell(row[k], maps.masked(q, k), 1)
        lines.append(line)
    return Group(*lines)


def habit(summary: HeadSummary, uniform: float) -> str:
    """A name for what a head mostly does, when one thing dominates."""
    if summary.first_token >= 0.5:
        return "first-token sink"
    if summary.previous_token >= 0.5:
        return "previous token"
    if summary.self_token >= 0.5:
        return "self"
    if uniform and summary.entropy >= 0.7 * uniform:
        return "broad"
    return ""


def summary_table(maps: AttentionMaps) -> Table:
    """Entropy, first-token, previous-token and self shares per head."""
    table = Table(title=f"heads of layer {maps.layer} (averaged over query rows 1..{len(maps.tokens) - 1})",
                  title_justify="left", expand=False)
    table.add_column("head", justify="right")
    table.add_column("kv", justify="right", style="dim")
    table.add_column("entropy", justify="right")
    table.add_column("first token", justify="right")
    table.add_column("previous", justify="right")
    table.add_column("self", justify="right")
    table.add_column("habit")
    group = maps.heads // maps.kv_heads
    for s in maps.summaries:
        table.add_row(str(s.head), str(s.head // group), f"{s.entropy:.2f} bits", f"{s.first_token:.2f}",
                      f"{s.previous_token:.2f}", f"{s.self_token:.2f}", habit(s, maps.uniform_entropy))
    return table


def legend() -> Text:
    """What the shades and dots mean."""
    text = Text("weight: ", style="dim")
    for (low, glyph), (high, _) in zip(SHADES, [*SHADES[1:], (1.0, "")]):
        text.append(glyph * 2 if glyph != " " else "  ", style=Style(color=Color.from_rgb(*heat_rgb(low))))
        text.append(f" {low:g}-{high:g}  ", style="dim")
    text.append(f"{MASKED} masked (a query cannot see later keys)", style="dim")
    return text


def attention_view(maps: AttentionMaps) -> RenderableType:
    """The whole `attention` screen: one head's large map, or all heads small plus the summary."""
    header = Text.assemble(
        ("model ", "dim"), (maps.model, "bold"), (f"   layer {maps.layer} of 0-{maps.layers - 1}", "dim"),
        (f"   {maps.attention}: {maps.heads} query heads, {maps.kv_heads} KV heads", "dim"),
        (f"   uniform attention would be {maps.uniform_entropy:.2f} bits", "dim"),
    )
    if maps.head is not None:
        title = Text(f"head {maps.head} (shares KV head {maps.head // (maps.heads // maps.kv_heads)}): "
                     "rows are queries, columns keys", style="bold")
        parts: list[RenderableType] = [header, title, heat_map(maps, maps.head), legend()]
        if len(maps.tokens) > HEAT_MAP_UP_TO:
            parts.append(Text(f"showing the last {HEAT_MAP_UP_TO} of {len(maps.tokens)} tokens; "
                              "--png or --json has the whole map", style="dim"))
        return Group(*parts)
    parts = [header]
    if len(maps.tokens) <= SMALL_MAPS_UP_TO and len(maps.weights) == maps.heads:
        parts += [token_key(maps), Columns([small_map(maps, h) for h in range(maps.heads)], padding=(1, 3)), legend()]
    else:
        parts.append(Text(f"{len(maps.tokens)} tokens: too many for small maps; pick one with --head", style="dim"))
    parts += [summary_table(maps), Text("one head in full: --head N", style="dim")]
    return Group(*parts)
