"""`llm next-token`: the table, the JSON, the tiny model's knowledge, and bad input."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.inside.predict import next_token
from lookinside.core.request import NextTokenRequest

from .conftest import TINY_TOKENIZER_FILES

ANSI = re.compile(r"\x1b\[")
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_tiny_knows_paris(tiny):
    result = next_token(tiny, NextTokenRequest("The capital of France is", top_k=5))
    assert result.top[0].token == " Paris"
    assert result.top[0].prob >= 0.5
    assert [c.rank for c in result.top] == [1, 2, 3, 4, 5]
    assert result.top[0].prob >= result.top[1].prob >= result.top[4].prob


@pytest.mark.parametrize(("country", "capital"), [("Germany", " Berlin"), ("Egypt", " Cairo"), ("Canada", " Ottawa")])
def test_tiny_knows_other_capitals(tiny, country, capital):
    assert next_token(tiny, NextTokenRequest(f"The capital of {country} is", top_k=1)).top[0].token == capital


def test_table_shows_tokens_shapes_and_candidates():
    result = run("next-token", "The capital of France is", "--model", "tiny", "--top-k", "3")
    assert result.exit_code == 0, result.output
    out = result.output
    assert not ANSI.search(out)  # not a terminal: plain text
    assert "▁France" in out and re.search(r"input ids +\[1, 6\]", out)
    assert re.search(r"hidden states +\[1, 6, 128\]", out) and re.search(r"logits +\[1, 6, 1024\]", out)
    assert "␣Paris" in out and "Top 3 next tokens" in out


def test_json_has_the_documented_fields():
    result = run("next-token", "The capital of France is", "--model", "tiny", "--json", "-k", "4", "-t", "0.5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "tiny" and data["prompt"] == "The capital of France is"
    assert data["tokens"][0] == {"index": 0, "id": 1, "piece": "<s>", "text": "<s>", "kind": "special", "byte": None,
                                 "joined": None} and len(data["tokens"]) == 6 and data["unavailable"] == {}
    assert data["shapes"] == {"input_ids": [1, 6], "hidden_states": [1, 6, 128], "logits": [1, 6, 1024]}
    assert [t["rank"] for t in data["top"]] == [1, 2, 3, 4]
    first = data["top"][0]
    assert first["token"] == " Paris" and first["prob"] >= 0.5
    assert first["prob_at_temperature"] > first["prob"]  # a cooler temperature sharpens the top token


def test_zero_temperature_is_greedy():
    data = json.loads(run("next-token", "2 + 3 =", "--model", "tiny", "--json", "-t", "0").stdout)
    assert [t["prob_at_temperature"] for t in data["top"][:2]] == [1.0, 0.0]


def test_chat_wraps_the_prompt_in_the_template():
    data = json.loads(run("next-token", "What is the capital of Japan?", "--model", "tiny", "--chat", "--json").stdout)
    pieces = [t["text"] for t in data["tokens"]]
    assert pieces[0] == "<|user|>" and pieces[-2:] == ["<|end|>", "<|assistant|>"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "prompt is empty"),
        (["hi", "--top-k", "0"], "--top-k must be a positive number"),
        (["hi", "--top-k", "-3"], "--top-k must be a positive number"),
        (["hi", "--temperature", "-1"], "--temperature must be >= 0"),
        (["word " * 600], "more than the model's context of 512 tokens"),
        (["hi", "--device", "tpu"], "--device must be one of"),
        (["hi", "--max-memory", "lots"], "--max-memory wants DEVICE=SIZE"),
    ],
)
def test_bad_input_gets_one_line_and_a_nonzero_exit(args, message):
    result = run("next-token", *args, "--model", "tiny")
    assert result.exit_code != 0
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_unknown_local_model_is_one_line():
    result = run("next-token", "hi", "--model", "./no/such/model")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: model './no/such/model': no such directory")


def test_model_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_MODEL", "tiny")
    result = run("next-token", "The capital of Italy is", "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["top"][0]["token"] == " Rome"


@pytest.mark.slow
def test_phi3_shapes_with_the_real_vocabulary(tmp_path, phi3_tokenizer_dir):
    """Phi-3-mini's dimensions (2 of its 32 layers), random weights, Phi-3's real tokenizer."""
    from lookinside.core.model.loading import load, load_config_offline
    from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec

    config = load_config_offline(DEFAULT_MODEL)
    config.num_hidden_layers = 2
    config.save_pretrained(tmp_path)
    for name in TINY_TOKENIZER_FILES:
        shutil.copy(phi3_tokenizer_dir / name, tmp_path / name)
    lm = load(LoadSpec(model=str(tmp_path), device="cpu", dtype="bfloat16", random_weights=True))
    result = next_token(lm, NextTokenRequest("The capital of France is", top_k=3))
    assert [t.id for t in result.tokens] == [1, 450, 7483, 310, 3444, 338]
    assert result.shapes == {"input_ids": [1, 6], "hidden_states": [1, 6, 3072], "logits": [1, 6, 32064]}
