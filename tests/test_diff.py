"""`llm diff`: two models (or one loaded two ways) over the same token ids, on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.errors import BadInput
from lookinside.core.inside.diff import compare_sides, read_side, run_diff
from lookinside.core.model.loading import load
from lookinside.core.model.spec import LoadSpec

from .conftest import random_model_dir, small_config

runner = CliRunner()
TEXT = "The capital of France is Paris. The capital of Japan is Tokyo. The capital of Italy is Rome."


def test_a_model_against_itself_is_exactly_zero(tiny):
    diff = compare_sides(read_side(tiny, TEXT, "a"), read_side(tiny, TEXT, "b"))
    assert diff.max_kl == 0.0 and diff.same_top1 == 1.0 and diff.parts_at is None
    assert diff.perplexity_a == diff.perplexity_b
    assert all(p.top_overlap == 1.0 for p in diff.positions)


def test_sdpa_against_eager_is_near_zero(tiny):
    eager = load(LoadSpec(model="tiny", device="cpu", attn="eager"))
    diff = compare_sides(read_side(tiny, TEXT, "sdpa"), read_side(eager, TEXT, "eager"))
    assert diff.max_kl < 1e-6 and diff.same_top1 == 1.0


def test_float32_against_bfloat16_is_small_but_not_zero(tiny):
    bf16 = load(LoadSpec(model="tiny", device="cpu", dtype="bfloat16"))
    diff = compare_sides(read_side(tiny, TEXT, "float32"), read_side(bf16, TEXT, "bfloat16"))
    # Measured on this text: mean 4.3e-05, max 3.8e-04 nats, every top-1 the same (docs/diff.md).
    assert 0 < diff.mean_kl < 1e-3 and diff.max_kl < 1e-2
    assert diff.same_top1 == 1.0
    assert abs(diff.perplexity_b / diff.perplexity_a - 1) < 0.01
    assert diff.worst(3)[0].kl == diff.max_kl


def test_kl_is_the_textbook_sum(tiny):
    a, b = read_side(tiny, TEXT, "a"), read_side(load(LoadSpec(model="tiny", dtype="bfloat16")), TEXT, "b")
    diff = compare_sides(a, b)
    t = 12
    pa, pb = a.logprobs[t].double().exp(), b.logprobs[t].double().exp()
    assert diff.positions[t].kl == pytest.approx(float((pa * (pa.log() - pb.log())).sum()), rel=1e-3, abs=1e-9)
    assert diff.positions[t].logprob_a == pytest.approx(float(a.logprobs[t, a.ids[t + 1]]))


def test_different_vocabularies_are_refused(tiny, tmp_path):
    other = load(LoadSpec(model=str(random_model_dir(tmp_path / "m", small_config("phi3-gqa", vocab_size=2048))),
                          device="cpu"))
    with pytest.raises(BadInput, match="different vocabularies"):
        compare_sides(read_side(tiny, TEXT, "a"), read_side(other, TEXT, "b"))


def test_a_text_longer_than_the_context_is_read_in_chunks(tiny):
    long = " ".join(["The capital of France is Paris."] * 90)
    with pytest.raises(BadInput, match="more than the model's context of 512 tokens"):
        read_side(tiny, long, "a")  # refused, as by every command
    side = read_side(tiny, long, "a", chunked=True)  # unless asked for
    assert len(side.ids) > tiny.context_length
    assert side.logprobs.shape == (len(side.ids) - 1, 1024)
    with torch.inference_mode():  # the second chunk starts afresh: its first row is what a cold prompt gives
        cold = torch.log_softmax(tiny.model(input_ids=torch.tensor([side.ids[512:513]])).logits[0, -1].float(), -1)
    assert torch.allclose(side.logprobs[512], cold, atol=1e-5)
    diff = compare_sides(side, side)
    assert len(diff.positions) == len(side.ids) - 1 and diff.max_kl == 0


def test_the_command_prints_the_report_and_json(tmp_path):
    result = runner.invoke(app, ["diff", TEXT, "--model", "tiny", "--against-dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    for part in ("KL(A‖B) mean", "same top-1", "perplexity A → B", "KL by position", "differ most", "greedy continuations"):
        assert part in result.output
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    result = runner.invoke(app, ["diff", "--file", str(path), "--model", "tiny", "--against-attn", "eager", "--json"])
    data = json.loads(result.output)
    assert data["how_a"] == "float32, sdpa" and data["how_b"] == "float32, eager"
    assert data["same_top1"] == 1.0 and len(data["positions"]) == data["tokens"] - 1
    assert data["worst_at"][0] == max(data["positions"], key=lambda p: p["kl"])["index"]
    assert data["perplexity_change"] == pytest.approx(data["perplexity_b"] / data["perplexity_a"] - 1)


@pytest.mark.parametrize(("args", "message"), [
    ([], "give the text"),
    (["hi", "--file", "x.txt"], "give the text"),
    (["--file", "/nonexistent/x.txt"], "cannot read /nonexistent/x.txt"),
    ([""], "the prompt is empty"),
])
def test_bad_input_is_one_line(args, message):
    result = runner.invoke(app, ["diff", *args, "--model", "tiny"])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_run_diff_loads_each_side_once(monkeypatch):
    loaded = []

    def counting_load(spec):
        loaded.append(spec.dtype)
        return load(spec)

    diff = run_diff(counting_load, LoadSpec(model="tiny"), LoadSpec(model="tiny", dtype="bfloat16"), TEXT)
    assert loaded == ["auto", "bfloat16"] and diff.how_b == "bfloat16, sdpa"
