"""Decoding settings and the logits -> probabilities -> token step.

`SamplingParams` is validated on creation. The processors are transformers' own,
applied to the logits in the order `model.generate` uses:

1. repetition penalty (`RepetitionPenaltyLogitsProcessor`), over the prompt and the reply so far;
2. temperature (`TemperatureLogitsWarper`): logits / T;
3. top-k (`TopKLogitsWarper`): keep the k highest;
4. top-p (`TopPLogitsWarper`): keep the smallest set whose probability reaches p;
5. min-p (`MinPLogitsWarper`): drop tokens below min_p x the top token's probability;

then softmax and one multinomial draw from a `torch.Generator` seeded with `seed`.
Temperature 0 means greedy: the argmax after step 1, and no warpers at all.
The filters after temperature see the tempered distribution, as in transformers.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from lookinside.core.errors import BadInput

if TYPE_CHECKING:
    import torch
    from transformers import LogitsProcessorList


@dataclass(frozen=True)
class SamplingField:
    """Everything the layers need to know about one sampling setting; `FIELDS` below is the one list.

    The CLI flags (cli/options.py), chat's `/set` and `/show`, `describe`, the JSON of every command,
    the model's generation-config defaults and the remote request (core/backends/remote.py) all read it.
    """

    name: str
    kind: type  # int or float
    default: Any
    flag: str
    help: str
    rule: str  # the range in words, as the error says it
    valid: Callable[[Any], bool]
    shorts: tuple[str, ...] = ()
    off: Any = None  # the value that turns it off; describe() leaves it out then (None: always shown)
    sampling_only: bool = True  # without effect when greedy
    settable: bool = True  # chat's /set can change it
    nullable: bool = False  # None is a value (`/set seed none`)
    from_generation_config: bool = True  # a model's generation config may give its default
    api: Literal["openai", "extra"] = "extra"  # OpenAI's own request field, or an extra one (vLLM accepts them)

    def parse(self, text: str) -> Any:
        """The value from its text form, as `/set NAME VALUE` gives it."""
        if self.nullable and text.lower() in ("none", "random", "off"):
            return None
        try:
            return self.kind(text)
        except ValueError:
            what = "an integer" if self.kind is int else "a number"
            raise BadInput(f"{self.name} takes {what}, not {text!r}") from None

    def check(self, value: Any) -> None:
        """Refuse a value of the wrong type or out of range, in one line."""
        if value is None and self.nullable:
            return
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int and not (number and isinstance(value, int)):
            raise BadInput(f"{self.name} must be a whole number, not {value!r}")
        if not number or not math.isfinite(value):
            raise BadInput(f"{self.name} must be a finite number, not {value!r}")
        if not self.valid(value):
            raise BadInput(f"{self.name} must be {self.rule}, not {value:{'d' if self.kind is int else 'g'}}")


FIELDS: tuple[SamplingField, ...] = (
    SamplingField("temperature", float, 1.0, "--temperature", "Sampling temperature; 0 is greedy.",
                  ">= 0 (0 is greedy)", lambda v: v >= 0, shorts=("-t",), api="openai"),
    SamplingField("top_k", int, 0, "--top-k", "Keep only the k most likely tokens (0: off).",
                  ">= 0 (0 turns it off)", lambda v: v >= 0, off=0),
    SamplingField("top_p", float, 1.0, "--top-p", "Keep the smallest set with this much probability.",
                  "in (0, 1] (1 turns it off)", lambda v: 0 < v <= 1, off=1.0, api="openai"),
    SamplingField("min_p", float, 0.0, "--min-p", "Drop tokens below min-p times the top probability.",
                  "in [0, 1] (0 turns it off)", lambda v: 0 <= v <= 1, off=0.0),
    SamplingField("seed", int, None, "--seed", "Random seed for sampling (shown so a run can be repeated).",
                  "in [0, 2**63)", lambda v: 0 <= v < 2**63, nullable=True, from_generation_config=False, api="openai"),
    SamplingField("repetition_penalty", float, 1.0, "--repetition-penalty", "Penalise tokens already seen (1: off).",
                  "> 0 (1 turns it off)", lambda v: v > 0, off=1.0, sampling_only=False),
)
FIELD = {f.name: f for f in FIELDS}
FLOAT32_TINY, FLOAT32_MAX = 1.1754944e-38, 3.4028235e38  # torch.finfo(torch.float32).tiny and .max


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. temperature=0 is greedy; seed=None is filled in by `seeded()`.

    Its fields are `FIELDS`, in that order; each value is checked by its field on creation.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        for f in FIELDS:
            f.check(getattr(self, f.name))

    @property
    def greedy(self) -> bool:
        """True when decoding always takes the most probable token."""
        return self.temperature == 0

    def seeded(self) -> SamplingParams:
        """A copy with a concrete seed, so every sampled run can be repeated."""
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(2**31))

    def updated(self, **changes: Any) -> SamplingParams:
        """A validated copy with some fields changed."""
        return replace(self, **changes)

    def describe(self) -> str:
        """A short line of the settings that are in effect, in `FIELDS` order."""
        parts = ["greedy"] if self.greedy else []
        for f in FIELDS:
            value = getattr(self, f.name)
            if (self.greedy and f.sampling_only) or (f.off is not None and value == f.off) or value is None:
                continue
            parts.append(f"{f.name}={value:g}" if f.kind is float else f"{f.name}={value}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Every field by name, as the JSON of each command and the transcripts write them."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SamplingParams:
        """Params from `to_json`'s object, validated again; unknown names are ignored."""
        return cls(**{k: v for k, v in data.items() if k in FIELD})


def request_fields(params: SamplingParams) -> dict[str, dict[str, Any]]:
    """The settings as an OpenAI-compatible request carries them: its own fields, and the extra ones.

    An extra field (top_k, min_p, repetition_penalty: vLLM takes them in the request body) is left
    out where it is off, so a server that knows none of them is only sent what it knows.
    """
    wire: dict[str, dict[str, Any]] = {"openai": {}, "extra": {}}
    for f in FIELDS:
        value = getattr(params, f.name)
        if value is not None and (f.api == "openai" or value != f.off):
            wire[f.api][f.name] = value
    return wire


def build_processors(params: SamplingParams) -> LogitsProcessorList:
    """transformers' logits processors for `params`, in generate's order."""
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if params.repetition_penalty != 1:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.greedy:
        return processors
    if params.temperature != 1 or params.repetition_penalty != 1:
        processors.append(ShiftToTop())  # any temperature or penalty the flags accept (1e-300 too) stays finite
    if params.temperature != 1:
        # The scores are float32: a temperature outside its range would be 0 or inf there (0/0, inf/inf = NaN).
        processors.append(TemperatureLogitsWarper(min(max(params.temperature, FLOAT32_TINY), FLOAT32_MAX)))
    if params.top_k:
        processors.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        processors.append(TopPLogitsWarper(params.top_p))
    if params.min_p > 0:
        processors.append(MinPLogitsWarper(params.min_p))
    return processors


class ShiftToTop:
    """A logits processor that subtracts each row's top score, so that the top is 0 and the rest below it.

    Softmax, top-k, top-p and min-p are unchanged by the shift; what changes is that dividing by a
    tiny temperature gives 0 and -inf (a sure pick of the top) instead of inf - inf = NaN. A score
    that is already +inf (a repetition penalty near 0 divides a positive logit by it) becomes the top.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """`scores` minus each row's maximum; +inf scores become 0 and every finite one -inf.  # (batch, vocab)"""
        import torch

        top = scores.max(dim=-1, keepdim=True).values  # (batch, 1)
        infinite = torch.isposinf(top)  # (batch, 1)
        shifted = scores - torch.where(infinite, torch.zeros_like(top), top)  # (batch, vocab)
        return torch.where(infinite, torch.where(torch.isposinf(scores), 0.0, float("-inf")), shifted)


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax at `temperature` in float32; temperature 0 puts all mass on the argmax."""
    import torch

    logits = logits.float()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row drawn from `probs`.  # (batch, vocab) -> (batch,)"""
    import torch

    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def top_candidates(probs: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """The k most probable ids of a 1-D distribution and their probabilities."""
    values, ids = probs.topk(min(k, probs.shape[-1]))
    return ids.tolist(), values.tolist()
