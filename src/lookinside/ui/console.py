"""The two consoles: results to stdout, diagnostics and progress to stderr.

Rich already drops colour codes when the stream is not a terminal and honours
NO_COLOR; these helpers keep every command making its consoles the same way.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType

from lookinside.core.files import write_atomically
from lookinside.core.finite import dumps
from lookinside.core.wire import to_wire


def stdout_console() -> Console:
    """Where results go."""
    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    """Where errors, notes and progress go."""
    return Console(stderr=True, highlight=False)


def show(result: Any, view: Callable[[Any], RenderableType], as_json: bool, keep: Any = None) -> None:
    """A command's record on stdout: its view, or with `as_json` the record as JSON (`print_json`); `keep`
    (cli.options.Keep) saves copies."""
    if as_json:
        print_json(result)
    else:
        stdout_console().print(view(result))
    if keep is not None and (keep.svg or keep.html):
        save_view(view(result), keep.svg, keep.html)


def save_view(renderable: RenderableType, svg: Path | None, html: Path | None, width: int = 100) -> None:
    """Draw `renderable` on a recording console and write it as SVG and/or HTML, each atomically or not at all."""
    console = recorded(renderable, width)
    if svg:
        write_atomically(svg.expanduser(), console.export_svg(title="lookinside", clear=False))
    if html:
        write_atomically(html.expanduser(), console.export_html(inline_styles=True, clear=False))


def recorded(renderable: RenderableType, width: int = 100) -> Console:
    """`renderable` drawn in full colour on a console that keeps it, for export_svg and export_html."""
    # force_jupyter=False: in a notebook Rich would also display() what it prints, so each view came out twice
    console = Console(record=True, file=io.StringIO(), width=width, force_terminal=True, color_system="truecolor",
                      force_jupyter=False)
    console.print(renderable)
    return console


def print_json(data: Any, indent: int | None = 2) -> None:
    """A record (or plain data) as one strict JSON document on stdout, made by core/wire.py's `to_wire`, never
    coloured: NaN and infinity are null, said in "nulls" (core/finite.py)."""
    sys.stdout.write(dumps(to_wire(data), indent=indent) + "\n")
