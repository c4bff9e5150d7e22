"""The two consoles: results to stdout, diagnostics and progress to stderr.

Rich already drops colour codes when the stream is not a terminal and honours
NO_COLOR; these helpers keep every command making its consoles the same way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console, RenderableType


def stdout_console() -> Console:
    """Where results go."""
    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    """Where errors, notes and progress go."""
    return Console(stderr=True, highlight=False)


def show(result: Any, view: Callable[[Any], RenderableType], to_json: Callable[[Any], Any], as_json: bool) -> None:
    """A command's result on stdout: its view, or with `as_json` its JSON."""
    if as_json:
        print_json(to_json(result))
    else:
        stdout_console().print(view(result))


def print_json(data: Any) -> None:
    """One JSON document on stdout, never coloured."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
