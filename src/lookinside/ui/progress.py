"""What loading a model says on stderr: what loads, then what it became (pure: text from a spec and a model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.core.model.spec import LoadSpec


def loading_line(spec: LoadSpec) -> str:
    """`loading NAME (device D, dtype T)…`, before the weights are read."""
    what = "random weights for " if spec.random_weights else ""
    return f"loading {what}{spec.model} (device {spec.device}, dtype {spec.dtype})…"


def loaded_lines(lm: LM, spec: LoadSpec, weights: bool = True) -> list[str]:
    """The weights' size, dtype and device (with `weights`), what a GGUF file became, and the quantization."""
    lines = []
    if weights:
        size = sum(p.numel() * p.element_size() for p in lm.model.parameters())
        why = " (--dtype auto)" if spec.dtype == "auto" else ""
        lines.append(f"weights: {size / 2**30:.2f} GiB in {str(lm.dtype).removeprefix('torch.')}{why} on {lm.device}")
    if lm.origin is not None:
        lines.append(lm.origin.describe())
    if lm.quantized is not None:
        lines.append(lm.quantized.describe())
    return lines
