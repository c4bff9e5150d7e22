"""The `tokens` view: the text as coloured pieces, then one row per token."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from lookinside.ui.text import visible

if TYPE_CHECKING:
    from lookinside.core.decoding.tokens import Tokenization
    from lookinside.core.records import Piece

STRIPES = ("on grey23", "on grey35")
KIND_STYLES = {"special": "bold magenta", "byte": "yellow", "text": ""}


def shown(token: Piece) -> str:
    """How a token reads on screen: whitespace drawn, a byte as 0xF0, a special token as itself."""
    if token.kind == "byte":
        return f"0x{token.byte:02X}"
    if token.kind == "special":
        return token.piece
    return visible(token.text)


def strip(tokens: tuple[Piece, ...]) -> Text:
    """The tokens side by side on alternating backgrounds, so the cuts show."""
    line = Text()
    for token in tokens:
        style = KIND_STYLES[token.kind] or ""
        line.append(shown(token), style=f"{style} {STRIPES[token.index % 2]}".strip())
        line.append("|" if token.index < len(tokens) - 1 else "", style="dim")
    return line


def token_table(tokens: tuple[Piece, ...]) -> Table:
    """Index, id, the vocabulary's piece, the text it stands for, and its kind."""
    table = Table(expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("id", justify="right")
    table.add_column("piece")
    table.add_column("text")
    table.add_column("kind")
    for t in tokens:
        style = KIND_STYLES[t.kind]
        kind = {"special": "special", "text": ""}.get(t.kind, f"byte 0x{t.byte or 0:02X}")
        if t.joined is not None:
            kind += f" → {visible(t.joined)!s}"
        text = "" if t.kind == "special" else shown(t)
        table.add_row(str(t.index), str(t.id), Text(visible(t.piece), style=style), text, Text(kind, style=style))
    return table


def tokens_view(result: Tokenization) -> RenderableType:
    """The whole `tokens` screen."""
    specials = sum(t.kind == "special" for t in result.tokens)
    header = Text.assemble(
        ("model ", "dim"), (result.model, "bold"),
        (f"   {len(result.tokens)} tokens ({specials} special)   vocabulary {result.vocab_size:,}", "dim"),
    )
    parts: list[RenderableType] = [header]
    if result.rendered is not None:
        parts.append(Panel(Text(result.rendered), title="chat template", title_align="left", expand=False))
    parts += [strip(result.tokens), token_table(result.tokens),
              Text("␣ space  ↵ newline  ⇥ tab  0xNN a byte-fallback piece (→ the character a run spells)",
                   style="dim")]
    return Group(*parts)
