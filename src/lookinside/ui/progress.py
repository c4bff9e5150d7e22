"""Loading with feedback on stderr: a line naming what loads, and the Hub's download bars.

Bars and notes appear only when stderr is a terminal; the built-in tiny model loads
too fast to need them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from lookinside.ui.console import stderr_console

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.core.model.spec import LoadSpec


def load_with_progress(spec: LoadSpec) -> LM:
    """Load the model `spec` names, telling the user what is happening."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    from lookinside.core.model.loading import load

    transformers.logging.set_verbosity_error()
    show = sys.stderr.isatty() and spec.model != "tiny"
    if show:
        enable_progress_bars()
        transformers.logging.enable_progress_bar()
        what = "random weights for " if spec.random_weights else ""
        stderr_console().print(f"[dim]loading {what}{spec.model} (device {spec.device}, dtype {spec.dtype})…[/]")
    else:
        disable_progress_bars()
        transformers.logging.disable_progress_bar()
    lm = load(spec)
    if show:
        weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
        dtype = str(lm.dtype).removeprefix("torch.")
        why = " (--dtype auto)" if spec.dtype == "auto" else ""
        stderr_console().print(f"[dim]weights: {weights / 2**30:.2f} GiB in {dtype}{why} on {lm.device}[/]")
    if lm.origin is not None:
        stderr_console().print(f"[dim]{lm.origin.describe()}[/]", soft_wrap=True)
    if lm.quantized is not None:
        stderr_console().print(f"[dim]{lm.quantized.describe()}[/]", soft_wrap=True)
    return lm
