"""Greedy decoding beside N sampled runs of the same prompt: one driver over any backend's token stream.

Sample i (counting from 0) uses seed `base + i`, so the whole comparison is
reproduced from the one base seed it shows. The greedy run keeps the repetition
penalty, so the only difference between the runs is how each token is picked.
A backend that names tokens by their text (a server) leaves the ids out, with the reason.
With the model here (and the dynamic cache), the prompt is prefilled once and every run decodes
in one batch (core/decoding/batch.py); each run's tokens are those it gets alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.core.backends.seam import as_backend
from lookinside.core.records import Comparison, gather

if TYPE_CHECKING:
    from lookinside.core.backends.seam import Backend
    from lookinside.core.model.loading import LM
    from lookinside.core.request import CompareRequest

NO_IDS = "this server names tokens by their text; the ids here are lookinside's, not the model's"
NO_PROMPT_IDS = "the server does not return the prompt's tokens here"


def compare(model: Backend | LM, request: CompareRequest) -> Comparison:
    """Generate greedily once and by sampling `request.samples` times from the same prompt."""
    backend, request = as_backend(model), request.seeded()
    greedy_params = request.params.updated(temperature=0.0, seed=None)
    every = (greedy_params, *request.sample_params())
    settings = request.settings
    if (here := backend.weights) is not None and settings.cache == "dynamic" and not settings.compile:
        from lookinside.core.decoding.batch import decode_together  # deferred: torch

        runs = decode_together(here, backend.prompt_ids(request.prompt, request.chat), every, settings)
    else:
        runs = [gather(backend.generate(request.prompt, params, settings, request.chat)) for params in every]
    prompt_ids = backend.prompt_ids(request.prompt, request.chat) if backend.capabilities.ids else None
    for run in runs:
        run.prompt_ids = list(prompt_ids or [])
    unavailable = {} if prompt_ids is not None else {"token_ids": NO_IDS, "prompt_ids": NO_PROMPT_IDS}
    return Comparison(backend.name, request.prompt, request.chat, list(prompt_ids or []), request.params,
                      request.settings, runs[0], runs[1:], unavailable)
