"""What the user asks of an intervention, checked on creation: nothing here loads or imports torch.

What needs the model (a layer or head in range, a part the blocks have, a prompt within the
context, a target that is one token) is checked by the core function once the model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lookinside.core.errors import BadInput
from lookinside.core.request import CHAT_HELP, REQUIRED, group, option, text, whole
from lookinside.core.rules import new_tokens
from lookinside.core.rules import check_prompt
from lookinside.core.sampling_params import SamplingParams

Part = Literal["attn", "mlp", "block"]
PARTS: tuple[Part, ...] = ("attn", "mlp", "block")
Mode = Literal["zero", "mean"]
MODES: tuple[Mode, ...] = ("zero", "mean")
Sweep = Literal["heads", "layers"]
SWEEPS: tuple[Sweep, ...] = ("heads", "layers")
PatchPart = Literal["resid", "attn", "mlp"]
PATCH_PARTS: tuple[PatchPart, ...] = ("resid", "attn", "mlp")
TOP_K = 10
ROWS_HELP = "Rows of the next-token tables."
BOTH = 'give both prompts: --clean "The capital of France is" --corrupt "The capital of Japan is"'


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

    prompt: str = text()
    heads: tuple[tuple[int, int], ...] = option(
        (), "--head", metavar="L.H", cli=list[str],
        help="Ablate head H of layer L, e.g. 0.1 (repeatable; negative numbers count from the end).")
    layer: int | None = option(None, "--layer", "-l", help="Ablate one layer's --part (0 is the first block, -1 the last).")
    part: Part = option("block", "--part", metavar="PART",
                        help="With --layer: attn | mlp (the sublayer's output) | block (its whole contribution).")
    mode: Mode = option("zero", "--mode", metavar="MODE",
                        help="zero: put zeros in its place; mean: its mean over the prompt's positions.")
    sweep: Sweep | None = option(None, "--sweep", metavar="KIND", help="heads: every head alone, as a layers x heads "
                                 "heat map; layers: every layer's attn, mlp and block alone.")
    top_k: int = option(TOP_K, "--top-k", "-k", help=ROWS_HELP)
    chat: bool = option(False, "--chat", help=CHAT_HELP)

    def __post_init__(self) -> None:
        check_prompt(self.prompt)  # a head is (layer, head) or, as the flag gives it, "L.H"
        object.__setattr__(self, "heads", tuple(parse_head(h) if isinstance(h, str) else tuple(h) for h in self.heads))
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

    clean: str = option(REQUIRED, "--clean", metavar="TEXT", missing=BOTH, help="The prompt whose activations are put back.")
    corrupt: str = option(REQUIRED, "--corrupt", metavar="TEXT", missing=BOTH,
                          help="The prompt that runs, patched one cell at a time (same number of tokens as --clean).")
    target: str | None = option(None, "--target", metavar="TOKEN", help="The token whose probability to watch, "
                                "e.g. ' Paris' (one token; default: the clean run's top token).")
    part: PatchPart = option("resid", "--part", metavar="PART",
                             help="resid: the residual stream; attn or mlp: that sublayer's output.")
    chat: bool = option(False, "--chat", help=CHAT_HELP)

    def __post_init__(self) -> None:
        check_prompt(self.clean)
        check_prompt(self.corrupt)
        if self.target is not None and not self.target:
            raise BadInput("--target is empty: give one token's text, such as ' Paris'")
        _one_of("--part", self.part, PATCH_PARTS)


@dataclass(frozen=True)
class SteerRequest:
    """`steer`: add alpha x (stream of `add` - stream of `subtract`) at depth `layer`, at every position, while generating."""

    prompt: str = text()
    add: str = option(REQUIRED, "--add", metavar="TEXT", help="The text whose direction is added.",
                      missing='give the direction to add: --add " Japan" (and --subtract " France" to take one away)')
    subtract: str | None = option(None, "--subtract", metavar="TEXT", help="The text whose direction is taken away.")
    # None: the middle block's output (steer.default_depth); alpha None: sized to the prompt's own stream there
    # (steer.STEER_SIZE, chosen by measurement: docs/interventions.md)
    layer: int | None = option(None, "--layer", "-l", help="The depth: 0 is the embeddings' output, i the residual "
                               "stream after block i-1. [default: the middle block's]")
    alpha: float | None = option(None, "--alpha", "-a", help="How strongly to add the vector (a finite number). "
                                 "[default: sized to 0.75 of the prompt's own stream there, docs/interventions.md]")
    params: SamplingParams = group(SamplingParams(temperature=0.0))  # greedy unless told
    max_new_tokens: int = option(24, "--max-new-tokens", "-n", help="Most tokens to generate.")
    rows: int = option(TOP_K, "--rows", help=ROWS_HELP)  # not --top-k: that is the sampler's
    chat: bool = option(False, "--chat", help=CHAT_HELP)

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
        new_tokens(self.max_new_tokens)
        whole("--rows", self.rows, low=1)


def check_alpha(alpha: object) -> None:
    """Refuse a steering weight that is not a finite number."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise BadInput(f"--alpha must be a finite number, not {alpha}")


def resolve(name: str, value: int, count: int, counting: str) -> int:
    """`value` in range for `count` items (negative counts from the end), or one line saying the range."""
    if not -count <= value < count:
        raise BadInput(f"{name} must be between 0 and {count - 1} (or -1 for the last) for {counting}, not {value}")
    return value % count
