"""How to pick each next token, as plain data: `FIELDS`, one description per sampler, and `SamplingParams`, checked
on creation. Nothing here imports torch or decoding; core/decoding/sampling.py turns the params into transformers'
logits processors.

A new sampler is one `SamplingField` in `FIELDS` (its `processor` names the transformers warper that takes its
value) and its field in `SamplingParams`: the CLI flags, `li.` keywords, chat's `/set`, the JSON, the remote request,
`llm serve`'s parsing and the processors all read them.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from lookinside.core.errors import BadInput


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
    processor: str | None = None  # transformers' warper taking the value, applied after temperature unless it is off

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
                  ">= 0 (0 turns it off)", lambda v: v >= 0, off=0, processor="TopKLogitsWarper"),
    SamplingField("top_p", float, 1.0, "--top-p", "Keep the smallest set with this much probability.",
                  "in (0, 1] (1 turns it off)", lambda v: 0 < v <= 1, off=1.0, api="openai",
                  processor="TopPLogitsWarper"),
    SamplingField("min_p", float, 0.0, "--min-p", "Drop tokens below min-p times the top probability.",
                  "in [0, 1] (0 turns it off)", lambda v: 0 <= v <= 1, off=0.0, processor="MinPLogitsWarper"),
    SamplingField("seed", int, None, "--seed", "Random seed for sampling (shown so a run can be repeated).",
                  "in [0, 2**63)", lambda v: 0 <= v < 2**63, nullable=True, from_generation_config=False, api="openai"),
    SamplingField("repetition_penalty", float, 1.0, "--repetition-penalty", "Penalise tokens already seen (1: off).",
                  "> 0 (1 turns it off)", lambda v: v > 0, off=1.0, sampling_only=False),
)
FIELD = {f.name: f for f in FIELDS}


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
