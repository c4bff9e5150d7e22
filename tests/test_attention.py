"""`llm attention`: eager weights of one layer, the causal mask, head summaries, heat maps, PNG."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest
import torch
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.errors import BadInput
from lookinside.core.inside.attention import attention_maps, summarize_head
from lookinside.core.request import AttentionRequest

from .conftest import random_model_dir, small_config

runner = CliRunner()
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny_eager():
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    return load(LoadSpec(model="tiny", device="cpu", attn="eager"))


@pytest.fixture(scope="module")
def llama_sdpa(tmp_path_factory):
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    path = random_model_dir(tmp_path_factory.mktemp("llama"), small_config("llama"))
    return load(LoadSpec(model=str(path), device="cpu", attn="sdpa"))


def test_weights_are_causal_distributions(tiny_eager):
    maps = attention_maps(tiny_eager, AttentionRequest(PROMPT, layer=1))
    n = len(maps.tokens)
    assert n == 6 and sorted(maps.weights) == [0, 1, 2, 3] and maps.attention == "GQA"
    for head in maps.weights.values():
        for q, row in enumerate(head):
            assert len(row) == n and sum(row) == pytest.approx(1.0, abs=1e-4)
            assert all(row[k] == 0.0 for k in range(q + 1, n))  # the future is masked
            assert maps.masked(q, q + 1) and not maps.masked(q, q)


def test_summaries_match_the_weights(tiny_eager):
    maps = attention_maps(tiny_eager, AttentionRequest(PROMPT, layer=0))
    for summary in maps.summaries:
        head = maps.weights[summary.head]
        rows = head[1:]
        assert summary.first_token == pytest.approx(sum(r[0] for r in rows) / len(rows), abs=1e-5)
        assert summary.previous_token == pytest.approx(sum(head[q][q - 1] for q in range(1, 6)) / 5, abs=1e-5)
        assert 0.0 <= summary.entropy <= maps.uniform_entropy + 1e-6


def test_summarize_known_patterns():
    n = 5
    previous = torch.zeros(n, n)
    previous[0, 0] = 1.0
    previous[torch.arange(1, n), torch.arange(0, n - 1)] = 1.0
    s = summarize_head(0, previous)
    assert (s.previous_token, s.first_token, s.entropy) == (pytest.approx(1.0), pytest.approx(0.25), pytest.approx(0.0))
    uniform = torch.tril(torch.ones(n, n))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    expected = sum(math.log2(q + 1) for q in range(1, n)) / (n - 1)
    assert summarize_head(1, uniform).entropy == pytest.approx(expected, abs=1e-5)


def test_long_prompts_keep_summaries_not_every_map(tiny_eager, monkeypatch):
    from rich.console import Console

    import lookinside.core.inside.attention as core
    import lookinside.ui.attention as view

    monkeypatch.setattr(core, "KEEP_ALL_HEADS_UP_TO", 4)
    monkeypatch.setattr(view, "HEAT_MAP_UP_TO", 3)
    everything = attention_maps(tiny_eager, AttentionRequest(PROMPT, layer=0))
    assert everything.weights == {} and len(everything.summaries) == 4
    one = attention_maps(tiny_eager, AttentionRequest(PROMPT, layer=0, head=1))
    assert list(one.weights) == [1] and len(one.weights[1]) == 6
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(view.attention_view(everything))
    console.print(view.attention_view(one))
    text = console.export_text()
    assert "too many for small maps" in text and "showing the last 3 of 6 tokens" in text
    rows = [line.split()[:2] for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert ["3", "␣of"] in rows and ["2", "␣capital"] not in rows  # only the last three query rows


def test_choice_checks():
    assert AttentionRequest(PROMPT, layer=-1).resolved(4, 8) == (3, None)
    assert AttentionRequest(PROMPT, layer=0, head=-1).resolved(4, 8) == (0, 7)
    with pytest.raises(BadInput, match="--layer"):
        AttentionRequest(PROMPT, layer=4).resolved(4, 8)
    with pytest.raises(BadInput, match="--head"):
        AttentionRequest(PROMPT, layer=0, head=8).resolved(4, 8)


def test_switches_an_sdpa_model_to_eager(llama_sdpa):
    assert llama_sdpa.attn_implementation == "sdpa"
    maps = attention_maps(llama_sdpa, AttentionRequest(PROMPT, layer=-1))
    assert llama_sdpa.attn_implementation == "eager"
    assert maps.layer == 1 and (maps.heads, maps.kv_heads) == (4, 2) and len(maps.weights[0]) == 6


def test_cli_one_head_heat_map():
    result = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--layer", "1", "--head", "0"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "head 0" in out and "query ↓" in out and "␣France" in out
    rows = [line for line in out.splitlines() if line.lstrip().startswith(("0 <s>", "5 ␣is"))]
    assert rows[0].count("·") == 5 and "·" not in rows[1].split("→")[0]  # row 0 sees only itself; row 5 all
    assert "eager" in result.stderr  # says it switched


def test_cli_all_heads_grid_and_summary():
    result = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--layer", "0"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert all(f"head {h}" in out for h in range(4))
    assert "entropy" in out and "first token" in out and "previous" in out


def test_cli_json_only_the_asked_head():
    result = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--layer", "2", "--head", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["weights"]) == ["3"] and len(data["weights"]["3"]) == 6
    assert data["attention"] == "GQA" and len(data["summaries"]) == 4 and data["layer"] == 2


def test_cli_bad_layer_is_refused_before_loading(monkeypatch):
    import lookinside.core.model.loading as loading

    monkeypatch.setattr(loading, "load", lambda spec: pytest.fail("loaded the model for a bad --layer"))
    result = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--layer", "9"])
    assert result.exit_code == 2 and "--layer must be between 0 and 3" in result.stderr
    result = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--head", "4"])
    assert result.exit_code == 2 and "--head must be between 0 and 3" in result.stderr


def test_cli_png(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    path = tmp_path / "map.png"
    result = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--head", "1", "--png", str(path)])
    assert result.exit_code == 0, result.output
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_cli_png_without_pillow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    result = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--png", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "Pillow" in result.stderr and "lookinside[png]" in result.stderr
