"""`llm lens`: the logit lens on the tiny model and on other architectures."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.errors import BadInput
from lookinside.core.inside.hooks import residual_stream
from lookinside.core.inside.lens import logit_lens
from lookinside.core.inside.predict import next_token
from lookinside.core.request import LensRequest, NextTokenRequest

from .conftest import random_model_dir, small_config

runner = CliRunner()
PROMPT = "The capital of France is"


def load_random(path, config):
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    return load(LoadSpec(model=str(random_model_dir(path, config)), device="cpu"))


def test_tiny_finds_paris(tiny):
    lens = logit_lens(tiny, LensRequest(PROMPT))
    assert lens.answer.token == " Paris"
    assert [r.layer for r in lens.rows] == list(range(tiny.config.num_hidden_layers + 1))
    assert lens.rows[-1].top[0].token == " Paris" and lens.rows[-1].answer_rank == 1
    assert lens.first_top1 is not None and lens.settled is not None and lens.first_top1 <= lens.settled
    assert all(len(r.top) == 3 and r.top[0].prob >= r.top[1].prob >= r.top[2].prob for r in lens.rows)
    assert lens.norm == "Phi3RMSNorm" and lens.grid is None and lens.position == 5


def test_last_layer_is_the_real_prediction(tiny):
    lens = logit_lens(tiny, LensRequest(PROMPT, top_k=5))
    real = next_token(tiny, NextTokenRequest(PROMPT, top_k=5))
    assert [g.token for g in lens.rows[-1].top] == [c.token for c in real.top]
    for guess, candidate in zip(lens.rows[-1].top, real.top):
        assert guess.prob == pytest.approx(candidate.prob, abs=1e-5)


def test_stream_is_pre_norm(tiny):
    # transformers' hidden_states[-1] is after the final norm; the lens must read the block's own output
    ids = torch.tensor([tiny.tokenizer(PROMPT).input_ids])  # (1, n)
    with residual_stream(tiny.model) as stream, torch.inference_mode():
        out = tiny.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    assert len(stream) == len(out.hidden_states) == tiny.config.num_hidden_layers + 1
    assert torch.equal(stream[0], out.hidden_states[0]) and torch.equal(stream[2], out.hidden_states[2])
    assert torch.allclose(tiny.model.model.norm(stream[-1]), out.hidden_states[-1], atol=1e-5)


def test_all_positions_grid(tiny):
    lens = logit_lens(tiny, LensRequest(PROMPT, all_positions=True))
    assert lens.grid is not None and len(lens.grid) == len(lens.rows)
    assert all(len(row) == len(lens.tokens) for row in lens.grid)
    assert lens.grid[-1][-1].id == lens.answer.id
    assert [g.id for g in lens.grid[-1]] == [g.id for g in logit_lens(tiny, LensRequest(PROMPT, all_positions=True)).grid[-1]]


def test_position_choice(tiny):
    lens = logit_lens(tiny, LensRequest(PROMPT, position=2))
    assert lens.position == 2 and lens.tokens[2].piece == "▁capital"
    with pytest.raises(BadInput, match="--position"):
        logit_lens(tiny, LensRequest(PROMPT, position=6))
    with pytest.raises(BadInput, match="--top-k"):
        logit_lens(tiny, LensRequest(PROMPT, top_k=0))


@pytest.mark.parametrize("kind", ["llama", "phi3-mha"])
def test_other_configs(tmp_path, kind):
    lm = load_random(tmp_path, small_config(kind))
    lens = logit_lens(lm, LensRequest(PROMPT, top_k=2))
    assert len(lens.rows) == 3 and lens.rows[-1].top[0].id == lens.answer.id
    assert lens.norm is not None and lens.norm.endswith("RMSNorm")


def test_gpt2_uses_ln_f(tmp_path):
    from transformers import GPT2Config

    lm = load_random(tmp_path, GPT2Config(vocab_size=1024, n_embd=64, n_layer=3, n_head=4, n_positions=128))
    lens = logit_lens(lm, LensRequest(PROMPT))
    assert lens.norm == "LayerNorm" and len(lens.rows) == 4
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([lm.tokenizer(PROMPT).input_ids])).logits[0, -1]  # (vocab,)
    assert lens.answer.id == int(logits.argmax())


def test_cli_view():
    result = runner.invoke(app, ["lens", PROMPT, "--model", "tiny"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "p(␣Paris)" in out and "final answer ␣Paris" in out and "top-1 first at layer" in out
    assert "Phi3RMSNorm → LM head" in out


def test_cli_grid_and_json():
    result = runner.invoke(app, ["lens", PROMPT, "--model", "tiny", "--all-positions", "--json", "-k", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"]["token"] == " Paris" and len(data["rows"]) == 5
    assert len(data["rows"][0]["top"]) == 2 and len(data["grid"]) == 5 and len(data["grid"][0]) == 6
    assert data["first_top1"] == next(r["layer"] for r in data["rows"] if r["answer_rank"] == 1)
    assert data["settled"] >= data["first_top1"] and data["rows"][data["settled"]]["top"][0]["token"] == " Paris"


def test_cli_grid_view():
    result = runner.invoke(app, ["lens", PROMPT, "--model", "tiny", "--all-positions"])
    assert result.exit_code == 0, result.output
    assert "by layer (rows) and position (columns)" in result.stdout and "␣France" in result.stdout


def test_soft_capped_logits_are_capped_in_the_lens_too(tiny, monkeypatch):
    from lookinside.core.inside.hooks import find_final_norm
    from lookinside.core.inside.lens import lens_probs

    states = torch.randn(2, 3, tiny.config.hidden_size)  # (depths, n, d_model)
    norm = find_final_norm(tiny.model)
    with torch.inference_mode():
        plain = lens_probs(tiny.model, norm, states)
        monkeypatch.setattr(tiny.model.config, "final_logit_softcapping", 1.0, raising=False)
        capped = lens_probs(tiny.model, norm, states)
    vocab = tiny.config.vocab_size
    assert capped.shape == plain.shape == (2, 3, vocab)
    def spread(probs):  # how much likelier the top token is than the least likely, per row
        return probs.max(-1).values / probs.min(-1).values  # (depths, n)

    # logits squashed into [-1, 1] leave no token more than e^2 times likelier than another
    assert bool((spread(capped) <= math.e**2 + 1e-3).all()) and bool((spread(plain) > math.e**2).all())
