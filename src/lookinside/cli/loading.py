"""The commands' way in to a model loaded here: core.model.loading.load, with what is happening said on stderr.

Bars and notes appear only when stderr is a terminal; the built-in tiny model loads too fast to
need them. The lines themselves are ui/progress.py's.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from lookinside.cli.edge import interrupt_held
from lookinside.ui.progress import loaded_lines, loading_line

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.core.model.spec import LoadSpec


def load_here(spec: LoadSpec) -> LM:
    """Load the model `spec` names, telling the user what is happening."""
    with interrupt_held():  # a Ctrl-C inside torch's import would abort the process: it waits for the import's end
        import transformers
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        from lookinside.core.model.loading import load  # deferred: torch
    from lookinside.ui.console import stderr_console  # deferred: rich

    transformers.logging.set_verbosity_error()
    show = sys.stderr.isatty() and spec.model != "tiny"
    if show:
        enable_progress_bars()
        transformers.logging.enable_progress_bar()
        stderr_console().print(f"[dim]{loading_line(spec)}[/]")
    else:
        disable_progress_bars()
        transformers.logging.disable_progress_bar()
    lm = load(spec)
    for line in loaded_lines(lm, spec, weights=show):
        stderr_console().print(line, style="dim", soft_wrap=True, markup=False, highlight=False)
    return lm
