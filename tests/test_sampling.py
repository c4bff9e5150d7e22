"""SamplingParams validation, the processor order, and draws that follow the model's probabilities."""

from __future__ import annotations

import re

import pytest
import torch

from lookinside.core.decoding.generate import pick, prefill
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.decoding.sampling import build_processors, logits_to_probs, top_candidates
from lookinside.core.errors import BadInput
from lookinside.core.sampling_params import FIELDS, SamplingParams, request_fields


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"top_k": 2.5}, "top_k must be a whole number"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"min_p": -0.1}, "min_p must be in [0, 1]"),
        ({"min_p": 1.1}, "min_p must be in [0, 1]"),
        ({"repetition_penalty": 0}, "repetition_penalty must be > 0"),
        ({"seed": -1}, "seed must be in [0, 2**63)"),
        ({"seed": 2**63}, "seed must be in [0, 2**63)"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(changes, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        SamplingParams(**changes)
    with pytest.raises(BadInput):
        SamplingParams().updated(**changes)  # copies are validated too


def test_params_are_frozen_and_seeded_copies_keep_a_given_seed():
    params = SamplingParams(temperature=0.7)
    with pytest.raises(AttributeError):
        params.temperature = 2.0  # type: ignore[misc]
    seeded = params.seeded()
    assert seeded.seed is not None and seeded.temperature == 0.7
    assert seeded.seeded() is seeded and SamplingParams(seed=5).seeded().seed == 5
    assert SamplingParams(temperature=0).greedy and not params.greedy


def test_describe_names_what_is_in_effect():
    assert SamplingParams(temperature=0).describe() == "greedy"
    line = SamplingParams(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.1, seed=7).describe()
    assert line == "temperature=0.8, top_k=40, top_p=0.9, min_p=0.05, seed=7, repetition_penalty=1.1"


def test_processors_follow_generates_order():
    names = [type(p).__name__ for p in build_processors(
        SamplingParams(temperature=0.5, top_k=10, top_p=0.9, min_p=0.1, repetition_penalty=1.2))]
    assert names == ["RepetitionPenaltyLogitsProcessor", "ShiftToTop", "TemperatureLogitsWarper", "TopKLogitsWarper",
                     "TopPLogitsWarper", "MinPLogitsWarper"]
    assert [type(p).__name__ for p in build_processors(SamplingParams(temperature=0, top_k=5))] == []
    assert len(build_processors(SamplingParams())) == 0  # temperature 1 and nothing else: plain softmax


def test_logits_to_probs_and_top_candidates():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    probs = logits_to_probs(logits)
    assert torch.allclose(probs.sum(), torch.tensor(1.0)) and probs.argmax() == 0
    assert logits_to_probs(logits, 0).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert logits_to_probs(logits, 2.0)[0] < probs[0]  # a hotter temperature flattens
    ids, values = top_candidates(probs, 2)
    assert ids == [0, 1] and values[0] > values[1]


def _draw(logits: torch.Tensor, params: SamplingParams, n: int) -> torch.Tensor:
    """`n` tokens drawn by the core's own `pick` from one position's logits; their frequencies."""
    generator = torch.Generator().manual_seed(1234)
    processors = build_processors(params)
    ids = torch.zeros((1, 1), dtype=torch.long)
    counts = torch.zeros(logits.shape[-1])
    for _ in range(n):
        counts[int(pick(logits, ids, processors, generator))] += 1
    return counts / n


def _total_variation(p: torch.Tensor, q: torch.Tensor, buckets: int = 6) -> float:
    """TV distance over q's top tokens plus one bucket for the rest (a long tail only adds noise)."""
    top = q.topk(min(buckets - 1, q.shape[-1])).indices
    rest_p, rest_q = 1 - p[top].sum(), 1 - q[top].sum()
    return float(((p[top] - q[top]).abs().sum() + (rest_p - rest_q).abs()) / 2)


def test_sampled_tokens_follow_the_models_probabilities(tiny):
    """4000 draws at one position of the tiny model; fixed seed, so the bound cannot flake.

    Under the null the expected total-variation distance is about sqrt(support / n) / 2 ~ 0.01 here;
    the bound 0.04 fails if temperature were ignored (TV ~ 0.2 at T=2) or the draw were greedy.
    """
    prompt = encode_prompt(tiny.tokenizer, "The capital of France is Paris")
    with torch.inference_mode():
        logits = prefill(tiny, torch.tensor([prompt]), None)  # (1, vocab)
    for temperature in (1.0, 2.0):
        expected = torch.softmax(logits[0] / temperature, dim=-1)
        observed = _draw(logits, SamplingParams(temperature=temperature), 4000)
        assert _total_variation(observed, expected) < 0.04
        other = torch.softmax(logits[0] / (3.0 - temperature), dim=-1)  # the other temperature's distribution
        assert _total_variation(observed, other) > 0.08  # the test can tell temperatures apart


def test_top_k_and_top_p_draw_only_from_the_kept_set():
    logits = torch.tensor([[3.0, 2.5, 2.0, 1.0, 0.0, -1.0]])  # (1, vocab)
    observed = _draw(logits, SamplingParams(top_k=2), 3000)
    kept = torch.softmax(logits[0, :2], dim=-1)
    assert observed[2:].sum() == 0 and _total_variation(observed[:2], kept) < 0.03
    observed = _draw(logits, SamplingParams(top_p=0.5), 3000)
    assert observed[2:].sum() == 0  # p(0)=0.43 < 0.5, p(0)+p(1)=0.69 >= 0.5: two tokens kept
    observed = _draw(logits, SamplingParams(min_p=0.5), 3000)
    # token 1 is exp(-0.5) = 0.61 of the top's probability: kept; token 2 (0.37) is not
    assert observed[2:].sum() == 0 and observed[1] > 0


# ---- one description per field: every layer reads core.sampling_params.FIELDS

@pytest.fixture(scope="module")
def cli_options():
    """Each command's option names, read from the Typer app."""
    import typer.main

    from lookinside.cli.app import app

    group = typer.main.get_command(app)
    return {name: {opt for param in command.params for opt in param.opts} for name, command in group.commands.items()}


def _set_value(field):
    """A value other than the default that the field accepts, as text for /set."""
    return {"temperature": "0.5", "top_k": "7", "top_p": "0.8", "min_p": "0.1", "seed": "11",
            "repetition_penalty": "1.3"}.get(field.name, "2")


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_every_sampling_field_reaches_every_layer(field, cli_options):
    from dataclasses import fields as dataclass_fields

    from lookinside.core.chat.defaults import SETTABLE, ChatSettings

    assert field.name in {f.name for f in dataclass_fields(SamplingParams)}
    for command in ("chat", "generate", "compare"):
        assert field.flag in cli_options[command], f"{command} lacks {field.flag}"
    settings = ChatSettings(params=SamplingParams(temperature=0.7))
    if field.settable:
        assert field.name in SETTABLE
        changed = settings.updated(field.name, _set_value(field)).params
        assert getattr(changed, field.name) == field.parse(_set_value(field)) != field.default
        assert f"{field.name}=" in changed.describe()  # /show and the chat's settings line print describe()
        assert ChatSettings.from_json(settings.updated(field.name, _set_value(field)).to_json()).params == changed
    params = SamplingParams(**{field.name: field.parse(_set_value(field))})
    assert params.to_json()[field.name] == getattr(params, field.name)
    wire = request_fields(params)
    assert field.name in wire["openai"] or field.name in wire["extra"] or getattr(params, field.name) == field.off


def test_a_field_without_a_flag_would_be_caught():
    from dataclasses import fields as dataclass_fields

    assert [f.name for f in dataclass_fields(SamplingParams)] == [f.name for f in FIELDS]
    assert len({f.flag for f in FIELDS}) == len(FIELDS)
