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
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from lookinside.core.errors import BadInput

if TYPE_CHECKING:
    import torch
    from transformers import LogitsProcessorList


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. temperature=0 is greedy; seed=None is filled in by `seeded()`."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadInput(f"{name} must be a finite number, not {value!r}")
        for name in ("top_k", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise BadInput(f"{name} must be a whole number, not {value!r}")
        checks = (
            (self.temperature >= 0, f"temperature must be >= 0 (0 is greedy), not {self.temperature:g}"),
            (self.top_k >= 0, f"top_k must be >= 0 (0 turns it off), not {self.top_k}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1] (1 turns it off), not {self.top_p:g}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1] (0 turns it off), not {self.min_p:g}"),
            (self.repetition_penalty > 0,
             f"repetition_penalty must be > 0 (1 turns it off), not {self.repetition_penalty:g}"),
            (self.seed is None or 0 <= self.seed < 2**63, f"seed must be in [0, 2**63), not {self.seed}"),
        )
        for ok, message in checks:
            if not ok:
                raise BadInput(message)

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
        """A short line of the settings that are in effect."""
        if self.greedy:
            parts = ["greedy"]
        else:
            parts = [f"temperature={self.temperature:g}"]
            parts += [f"top_k={self.top_k}"] if self.top_k else []
            parts += [f"top_p={self.top_p:g}"] if self.top_p < 1 else []
            parts += [f"min_p={self.min_p:g}"] if self.min_p > 0 else []
            parts += [f"seed={self.seed}"] if self.seed is not None else []
        parts += [f"repetition_penalty={self.repetition_penalty:g}"] if self.repetition_penalty != 1 else []
        return ", ".join(parts)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the settings, as `/set` and the options use them."""
        return tuple(f.name for f in fields(cls))


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
    if params.temperature != 1:
        processors.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        processors.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        processors.append(TopPLogitsWarper(params.top_p))
    if params.min_p > 0:
        processors.append(MinPLogitsWarper(params.min_p))
    return processors


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
