"""Greedy decoding beside N sampled runs of the same prompt, all through the one generation core.

Sample i (counting from 0) uses seed `base + i`, so the whole comparison is
reproduced from the one base seed it shows. The greedy run keeps the repetition
penalty, so the only difference between the runs is how each token is picked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.core.generate import collect
from lookinside.core.prompting import encode_prompt
from lookinside.core.records import Comparison

if TYPE_CHECKING:
    from lookinside.core.loading import LM
    from lookinside.core.request import CompareRequest


def compare(lm: LM, request: CompareRequest) -> Comparison:
    """Generate greedily once and by sampling `request.samples` times from the same prompt."""
    request = request.seeded()
    prompt_ids = encode_prompt(lm.tokenizer, request.prompt, chat=request.chat)
    greedy = collect(lm, prompt_ids, request.params.updated(temperature=0.0, seed=None), request.settings)
    runs = [collect(lm, prompt_ids, p, request.settings) for p in request.sample_params()]
    return Comparison(lm.name, request.prompt, request.chat, prompt_ids, request.params, request.settings, greedy, runs)
