"""Greedy decoding beside N sampled runs of the same prompt, all through the one generation core.

Sample i (counting from 0) uses seed `base + i`, so the whole comparison is
reproduced from the one base seed it shows. The greedy run keeps the repetition
penalty, so the only difference between the runs is how each token is picked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lookinside.core import errors
from lookinside.core.generate import Generation, GenerationConfig, collect
from lookinside.core.prompting import check_prompt, encode_prompt
from lookinside.core.sampling import SamplingParams

if TYPE_CHECKING:
    from lookinside.core.loading import LM

MAX_SAMPLES = 16


@dataclass(frozen=True)
class Comparison:
    """The greedy run, the sampled runs, and the settings that made them."""

    model: str
    prompt: str
    chat: bool
    prompt_ids: list[int]
    params: SamplingParams  # the samplers' settings; `seed` is the base seed
    config: GenerationConfig
    greedy: Generation
    samples: list[Generation]

    @property
    def seeds(self) -> list[int]:
        """Each sample's seed: base, base + 1, ... (shown even at temperature 0, where it has no effect)."""
        return [(self.params.seed or 0) + i for i in range(len(self.samples))]

    def departs(self, run: Generation) -> int | None:
        """Index of the first new token where `run` differs from the greedy run (None: identical)."""
        return first_difference(self.greedy.token_ids, run.token_ids)


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first index where two id lists differ (a length difference counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check_compare_request(prompt: str, samples: int, params: SamplingParams) -> None:
    """Refuse bad arguments before any model is loaded (SamplingParams has checked its own)."""
    check_prompt(prompt)
    if not 1 <= samples <= MAX_SAMPLES:
        raise errors.BadInput(f"--samples must be between 1 and {MAX_SAMPLES}, not {samples}")
    if params.seed is not None and params.seed + samples > 2**63:
        raise errors.BadInput(f"--seed must be below 2**63 - {samples}, not {params.seed}")


def sample_params(params: SamplingParams, samples: int) -> list[SamplingParams]:
    """One seeded copy of `params` per sample: seeds base, base + 1, ..."""
    base = params.seeded().seed or 0
    return [params.updated(seed=base + i) for i in range(samples)]


def compare(
    lm: LM, prompt: str, params: SamplingParams, config: GenerationConfig, samples: int = 3, chat: bool = False
) -> Comparison:
    """Generate greedily once and by sampling `samples` times from the same prompt."""
    check_compare_request(prompt, samples, params)
    params = params.seeded()
    prompt_ids = encode_prompt(lm.tokenizer, prompt, chat=chat)
    greedy = collect(lm, prompt_ids, params.updated(temperature=0.0, seed=None), config)
    runs = [collect(lm, prompt_ids, p, config) for p in sample_params(params, samples)]
    return Comparison(lm.name, prompt, chat, prompt_ids, params, config, greedy, runs)
