"""What the user asks of an intervention, checked on creation: nothing here loads or imports torch.

What needs the model (a layer or head in range, a part the blocks have, a prompt within the
context, a target that is one token) is checked by the core function once the model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from lookinside.core.decoding.prompting import check_prompt
from lookinside.core.decoding.sampling import SamplingParams
from lookinside.core.errors import BadInput
from lookinside.core.request import whole

Part = Literal["attn", "mlp", "block"]
PARTS: tuple[Part, ...] = ("attn", "mlp", "block")
Mode = Literal["zero", "mean"]
MODES: tuple[Mode, ...] = ("zero", "mean")
Sweep = Literal["heads", "layers"]
SWEEPS: tuple[Sweep, ...] = ("heads", "layers")
PatchPart = Literal["resid", "attn", "mlp"]
PATCH_PARTS: tuple[PatchPart, ...] = ("resid", "attn", "mlp")
TOP_K = 10


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BadInput(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def parse_head(text: str) -> tuple[int, int]:
    """`3.1` -> (layer 3, head 1); negative numbers count from the end."""
    layer, dot, head = text.partition(".")
    try:
        if not dot:
            raise ValueError
        return int(layer), int(head)
    except ValueError:
        raise BadInput(f"--head takes LAYER.HEAD, such as 2.1 (layer 2, head 1), not {text!r}") from None


@dataclass(frozen=True)
class AblateRequest:
    """`ablate`: heads (layer, head) or one layer's part, or a sweep of every head or every layer and part."""

    prompt: str
    heads: tuple[tuple[int, int], ...] = ()
    layer: int | None = None
    part: Part = "block"
    mode: Mode = "zero"
    sweep: Sweep | None = None
    top_k: int = TOP_K
    chat: bool = False

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        object.__setattr__(self, "heads", tuple(tuple(h) for h in self.heads))
        for layer, head in self.heads:
            whole("--head's layer", layer)
            whole("--head's head", head)
        if self.layer is not None:
            whole("--layer", self.layer)
        _one_of("--part", self.part, PARTS)
        _one_of("--mode", self.mode, MODES)
        if self.sweep is not None:
            _one_of("--sweep", self.sweep, SWEEPS)
        whole("--top-k", self.top_k, low=1)
        chosen = sum((bool(self.heads), self.layer is not None, self.sweep is not None))
        if chosen != 1:
            raise BadInput("say what to ablate: --head L.H (repeatable), --layer L [--part attn|mlp|block], "
                           "or --sweep heads|layers" + (" (only one of them)" if chosen else ""))


@dataclass(frozen=True)
class PatchRequest:
    """`patch`: the clean and corrupted prompts, the token to watch (None: the clean top token), and what to patch."""

    clean: str
    corrupt: str
    target: str | None = None
    part: PatchPart = "resid"
    chat: bool = False

    def __post_init__(self) -> None:
        check_prompt(self.clean)
        check_prompt(self.corrupt)
        if self.target is not None and not self.target:
            raise BadInput("--target is empty: give one token's text, such as ' Paris'")
        _one_of("--part", self.part, PATCH_PARTS)


@dataclass(frozen=True)
class SteerRequest:
    """`steer`: add alpha x (stream of `add` - stream of `subtract`) at depth `layer`, at every position, while generating."""

    prompt: str
    add: str
    subtract: str | None = None
    layer: int | None = None  # None: the middle of the model (core/inside/interventions/steer.default_depth)
    alpha: float | None = None  # None: sized to the stream there (steer.STEER_SIZE, chosen by measurement)
    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0))
    max_new_tokens: int = 24
    top_k: int = TOP_K
    chat: bool = False

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        if not self.add.strip():
            raise BadInput("--add is empty: give the text whose direction to add")
        if self.subtract is not None and not self.subtract.strip():
            raise BadInput("--subtract is empty: give some text, or leave it out")
        if self.layer is not None:
            whole("--layer", self.layer)
        if self.alpha is not None:
            check_alpha(self.alpha)
        whole("--max-new-tokens", self.max_new_tokens, low=1)
        whole("--top-k", self.top_k, low=1)


def check_alpha(alpha: object) -> None:
    """Refuse a steering weight that is not a finite number."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise BadInput(f"--alpha must be a finite number, not {alpha}")


def resolve(name: str, value: int, count: int, counting: str) -> int:
    """`value` in range for `count` items (negative counts from the end), or one line saying the range."""
    if not -count <= value < count:
        raise BadInput(f"{name} must be between 0 and {count - 1} (or -1 for the last) for {counting}, not {value}")
    return value % count
