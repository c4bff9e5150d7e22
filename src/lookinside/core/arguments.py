"""The Python API's arguments checked at the door: a wrong type is the package's own error, in one line.

Without these, `li.next_token(lm, 123)` fails deep in a tokenizer (AttributeError), a string in
the model's place as `'str' object has no attribute 'tokenizer'`, and a model on the meta device
in the middle of a matmul. `api.py` calls one of these at the top of each function. Nothing
here imports torch until a model is looked at.
"""

from __future__ import annotations

import os
from typing import Any

from lookinside.core import errors
from lookinside.core.backends.seam import Backend


def text(value: Any, what: str, fn: str) -> str:
    """`value` if it is a str; BadInput naming the function and what it wanted otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        raise errors.BadInput(f"{fn}() takes the {what} as text (str), not bytes: decode it first, "
                              "e.g. data.decode('utf-8')")
    raise errors.BadInput(f"{fn}() takes the {what} as text (str), not {_kind(value)}")


def model_name(value: Any) -> str:
    """li.load's model: a name, Hub id or directory (str or path); BadInput otherwise."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)  # type: ignore[return-value]
    if isinstance(value, str) and value.strip():
        return value
    raise errors.BadInput(f"load() takes a model name: 'tiny', a Hub id like 'owner/name', or a directory, "
                          f"not {_kind(value)}")


def lm(value: Any, fn: str, runs: bool = True) -> Any:
    """`value` if it is an LM from li.load() or li.wrap() (with weights, when the function `runs` the model)."""
    if isinstance(value, Backend):  # a server from li.connect(), or a model here behind the seam
        return value
    from lookinside.core.model.loading import LM  # deferred: torch, only for a model (never for li.connect()'s backend)

    if isinstance(value, str):
        raise errors.BadInput(f"{fn}() takes a model from li.load(), li.wrap() or li.connect(), not the string "
                              f"{value!r}: lm = li.load({value!r}) first")
    if not isinstance(value, LM):
        raise errors.BadInput(f"{fn}() takes a model from li.load(), li.wrap() or li.connect(), not {_kind(value)}")
    if runs and _on_meta(value.model):
        raise errors.BadInput(f"{fn}(): the weights of {value.name} are on the meta device (shapes without values), "
                              "so nothing can run; load them, e.g. with li.load() or model.to_empty() and a state dict")
    return value


def _on_meta(model: Any) -> bool:
    try:
        return any(p.device.type == "meta" for p in model.parameters())
    except (AttributeError, TypeError):
        return False


def _kind(value: Any) -> str:
    return "None" if value is None else f"{type(value).__name__} {value!r}"[:60]


def view(model: Any, prompt: Any, fn: str, what: str = "prompt", runs: bool = True) -> None:
    """The two arguments every view takes: a loaded model and a text."""
    lm(model, fn, runs)
    text(prompt, what, fn)
