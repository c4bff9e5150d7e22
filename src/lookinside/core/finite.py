"""Numbers that are not numbers: logits refused with their likely cause, and JSON kept strict.

`check_logits(lm, logits)` raises `NonFiniteLogits` when a forward pass gave NaN or +inf (or a
row with no finite value), naming what is most likely at fault: a non-positive `rms_norm_eps`
or `layer_norm_eps` in config.json, weights that hold NaN or inf, or a float16 overflow.
Every forward path calls it (core/inside/passes.py; the generation loop should call it on each step's
logits too).

`json_safe(data)` is for every JSON lookinside writes (`--json`, `--jsonl`, transcripts): a
non-finite float becomes `null`, and the document says why in a top-level `"nulls"` object that
maps each place (`candidates[0].logprob`) to what was there (`-Infinity`). The JSON is then
valid for any parser (`allow_nan=False`). torch is imported only by `check_logits`.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from lookinside.core.errors import LookinsideError

if TYPE_CHECKING:
    import torch

    from lookinside.core.model.loading import LM

NULLS = "nulls"  # the top-level key that says why a number is null


class NonFiniteLogits(LookinsideError):
    """The model's output holds NaN or infinity: nothing drawn from it would mean anything."""


def check_logits(lm: LM, logits: torch.Tensor) -> None:
    """Raise NonFiniteLogits, naming the likely cause, unless every logit is finite (-inf alone is allowed)."""
    import torch

    bad = torch.isnan(logits) | torch.isposinf(logits)  # (..., vocab)
    empty = torch.isneginf(logits).all(dim=-1)  # (...,) rows where no token is possible
    if not bool(bad.any()) and not bool(empty.any()):
        return
    what = "NaN" if bool(torch.isnan(logits).any()) else "infinite values"
    raise NonFiniteLogits(f"the model's output holds {what} ({lm.name}): {likely_cause(lm)}")


def likely_cause(lm: LM) -> str:
    """The most likely reason a model gives NaN: its config's epsilon, its weights, or its dtype."""
    import torch

    config = getattr(lm.model, "config", None)
    for name in ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"):
        eps = getattr(config, name, None)
        if isinstance(eps, (int, float)) and not eps > 0:
            return f"config.json sets {name} to {eps}; it must be a small positive number such as 1e-05"
    for name, param in lm.model.named_parameters():
        if param.is_floating_point() and param.device.type != "meta" and not bool(torch.isfinite(param).all()):
            return f"the weights hold NaN or infinity (first in {name}): the checkpoint is damaged"
    dtype = getattr(lm.model, "dtype", None)
    if dtype == torch.float16:
        return "float16 overflowed in the forward pass: try --dtype bfloat16 or --dtype float32"
    return f"the weights and config look finite; try --dtype float32 (now {str(dtype).removeprefix('torch.')})"


def json_safe(data: Any) -> Any:
    """`data` with every NaN and infinity replaced by None, and (for a dict) a top-level "nulls" saying where and why."""
    nulls: dict[str, str] = {}
    clean = _replace(data, "", nulls)
    if nulls and isinstance(clean, dict):
        clean[NULLS] = {**clean.get(NULLS, {}), **nulls}
    return clean


def dumps(data: Any, indent: int | None = None) -> str:
    """Strict JSON text for `data` (see `json_safe`): never NaN or Infinity, which no JSON parser must accept."""
    return json.dumps(json_safe(data), indent=indent, ensure_ascii=False, allow_nan=False)


def _replace(value: Any, path: str, nulls: dict[str, str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        nulls[path or "."] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return None
    if isinstance(value, dict):
        return {key: _replace(item, f"{path}.{key}" if path else str(key), nulls) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace(item, f"{path}[{i}]", nulls) for i, item in enumerate(value)]
    return value
