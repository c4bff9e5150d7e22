"""The CPU's replayed greedy step (core/decoding/compiled.Replay): the eager tokens, and nothing it should see missed.

A run's first two greedy steps go through dynamo's guards; the rest call inductor's graph directly with the inputs
dynamo gathered. These tests hold it to the eager loop, and check that a weight changed, a parameter replaced or a
hook registered, between two runs or in the middle of one, is seen: the tokens after it are the eager ones with the
same change made at the same step.
"""

from __future__ import annotations

import pytest
import torch

from lookinside.core.decoding.compiled import Compiled
from lookinside.core.decoding.generate import collect, generate
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.request import GenerationSettings
from lookinside.core.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0)
N = 24
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def lm():
    """A tiny model of this module's own (the tests change its weights and hooks), compiled by one warm-up run."""
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    model = load(LoadSpec(model="tiny", device="cpu", threads=1))
    collect(model, _prompt(model), GREEDY, _settings(compile=True, n=4))
    if Compiled.for_model(model).note:
        pytest.skip(Compiled.for_model(model).note)
    return model


def _prompt(lm) -> list[int]:
    return encode_prompt(lm.tokenizer, PROMPT)


def _settings(compile: bool, n: int = N) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=n, ignore_eos=True, compile=compile)


def _run(lm, compile: bool) -> list[int]:
    return collect(lm, _prompt(lm), GREEDY, _settings(compile)).token_ids


def _replays(lm) -> int:
    return Compiled.for_model(lm).replays


def _push_layer(lm, scale: float):
    """A forward hook on the first decoder layer that adds `scale` x a fixed direction to its output (a steer)."""
    direction = torch.linspace(-1, 1, lm.model.config.hidden_size)

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        pushed = hidden + scale * direction
        return (pushed, *output[1:]) if isinstance(output, tuple) else pushed
    return lm.model.model.layers[0].register_forward_hook(hook)


def _reversed(weight: torch.nn.Parameter) -> torch.nn.Parameter:
    """Another parameter object of the same shape, whose numbers change what the model says."""
    return torch.nn.Parameter(-3.0 * weight.detach(), requires_grad=False)


def test_a_replayed_run_equals_the_eager_one(lm):
    before = _replays(lm)
    compiled = collect(lm, _prompt(lm), GREEDY, _settings(True))
    eager = collect(lm, _prompt(lm), GREEDY, _settings(False))
    assert _replays(lm) - before == N - 3  # the prefill's token, then two guarded steps, then replays
    assert compiled.token_ids == eager.token_ids and compiled.steps[0].text == " Paris"
    for ours, theirs in zip(compiled.steps, eager.steps):
        assert ours.rank == theirs.rank and [i for i, _ in ours.top] == [i for i, _ in theirs.top]
        assert ours.prob == pytest.approx(theirs.prob, rel=1e-4, abs=1e-6)


def test_a_weight_changed_in_place_between_runs_is_seen(lm):
    plain = _run(lm, compile=True)
    head = lm.model.lm_head.weight
    kept = head.detach().clone()
    try:
        with torch.no_grad():
            head[plain[3]] -= 10.0  # the fourth token can no longer win (nor read the same, with tied embeddings)
        changed, eager = _run(lm, compile=True), _run(lm, compile=False)
    finally:
        with torch.no_grad():
            head.copy_(kept)
    assert changed == eager != plain
    assert _run(lm, compile=True) == plain


def test_a_replaced_parameter_between_runs_is_seen(lm):
    plain = _run(lm, compile=True)
    layer = lm.model.model.layers[-1].mlp.down_proj
    kept = layer.weight
    try:
        layer.weight = _reversed(kept)
        changed, eager = _run(lm, compile=True), _run(lm, compile=False)
    finally:
        layer.weight = kept
    assert changed == eager != plain
    assert _run(lm, compile=True) == plain


def test_a_hook_between_runs_is_seen_and_keeps_the_run_off_the_replay(lm):
    plain = _run(lm, compile=True)
    handle = _push_layer(lm, 2.0)
    try:
        before = _replays(lm)
        hooked = _run(lm, compile=True)
        assert _replays(lm) == before  # a hook present at the start: every step through the guards
        eager = _run(lm, compile=False)
    finally:
        handle.remove()
    assert hooked == eager != plain
    before = _replays(lm)
    assert _run(lm, compile=True) == plain and _replays(lm) - before == N - 3  # the hook gone: replayed again


def _after(lm, compile: bool, change) -> list[int]:
    """A run's tokens with `change()` made after its eighth token (by then the compiled run is replaying)."""
    stream = generate(lm, _prompt(lm), GREEDY, _settings(compile))
    head = [next(stream).token_id for _ in range(8)]
    undo = change()
    try:
        return head + [step.token_id for step in stream]
    finally:
        undo()


def test_a_hook_registered_in_the_middle_of_a_run_is_seen(lm):
    def hook():
        return _push_layer(lm, 2.0).remove

    before = _replays(lm)
    compiled = _after(lm, True, hook)
    assert _replays(lm) > before  # it was replaying when the hook came
    assert compiled == _after(lm, False, hook) != _run(lm, compile=False)


def test_a_parameter_replaced_in_the_middle_of_a_run_is_seen(lm):
    layer = lm.model.model.layers[-1].mlp.down_proj

    def swap():
        kept = layer.weight
        layer.weight = _reversed(kept)

        def undo():
            layer.weight = kept
        return undo

    compiled = _after(lm, True, swap)
    assert compiled == _after(lm, False, swap) != _run(lm, compile=False)
