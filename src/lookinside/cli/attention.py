"""What `llm attention` has beyond its request: --png, the heat maps written as a picture too.

The command itself is made from its view (cli/views.py's `command_for`); this is its one `Extra`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lookinside.cli.views import Extra


def _check(png: Path | None) -> None:
    if png is not None:
        from lookinside.ui import attention_png  # deferred: rich

        attention_png.require_pillow()


def _write(maps: Any, png: Path | None) -> None:
    if png is not None:
        from lookinside.ui import attention_png  # deferred: rich
        from lookinside.ui.console import stderr_console  # deferred: rich

        attention_png.save_png(maps, png)
        stderr_console().print(f"wrote {png}", style="dim", markup=False)


PNG = Extra(inspect.Parameter("png", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[
    Optional[Path], typer.Option("--png", help="Also write the heat map(s) to this PNG file (needs Pillow).",
                                 show_default=False, dir_okay=False)]), _check, _write)
