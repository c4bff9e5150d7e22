"""`llm tokens`: ids, pieces, byte fallback, special tokens, the chat template; no weights read."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.decoding.tokens import tokenize
from lookinside.core.model.loading import load_tokenizer
from lookinside.core.model.spec import LoadSpec

runner = CliRunner()
EMOJI = "🙂"  # not in the tiny vocabulary: four byte-fallback pieces


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return load_tokenizer(LoadSpec(model="tiny"))


def test_pieces_kinds_and_bytes(tiny_tokenizer):
    result = tokenize("tiny", tiny_tokenizer, f"Hi {EMOJI} there")
    kinds = [t.kind for t in result.tokens]
    assert result.tokens[0].piece == "<s>" and kinds[0] == "special"
    assert kinds.count("byte") == len(EMOJI.encode())
    byte_tokens = [t for t in result.tokens if t.kind == "byte"]
    assert bytes(t.byte for t in byte_tokens) == EMOJI.encode()
    assert [t.joined for t in byte_tokens] == [None, None, None, EMOJI]  # the run says what it spells, once
    assert result.tokens[1].text == " Hi" and result.tokens[1].piece == "▁Hi"
    assert [t.index for t in result.tokens] == list(range(len(result.tokens)))
    assert result.rendered is None and result.vocab_size == len(tiny_tokenizer)


def test_ids_decode_back_to_the_text(tiny_tokenizer):
    text = f"The capital of France is {EMOJI}\n\tok"
    result = tokenize("tiny", tiny_tokenizer, text)
    assert tiny_tokenizer.decode([t.id for t in result.tokens], skip_special_tokens=True) == text


def test_chat_marks_the_templates_special_tokens(tiny_tokenizer):
    result = tokenize("tiny", tiny_tokenizer, "Hello", chat=True)
    assert result.rendered is not None and result.rendered.startswith("<|user|>")
    specials = [t.piece for t in result.tokens if t.kind == "special"]
    assert specials == ["<|user|>", "<|end|>", "<|assistant|>"]


def test_loads_no_model(monkeypatch):
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("tokens must not load the model")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    result = runner.invoke(app, ["tokens", "Hello world", "--model", "tiny"])
    assert result.exit_code == 0, result.output


def test_cli_view_shows_whitespace_bytes_and_specials():
    result = runner.invoke(app, ["tokens", f"Hi {EMOJI}\n\tok", "--model", "tiny"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "␣Hi" in out and "↵" in out and "0xF0" in out and f"→ {EMOJI}" in out
    assert "special" in out and "<s>" in out


def test_cli_chat_shows_the_rendered_template():
    result = runner.invoke(app, ["tokens", "Hello", "--model", "tiny", "--chat"])
    assert result.exit_code == 0, result.output
    assert "chat template" in result.stdout and "<|assistant|>" in result.stdout


def test_cli_json():
    result = runner.invoke(app, ["tokens", f"a {EMOJI}", "--model", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["chat"] is False and data["rendered"] is None and data["vocab_size"] == 980  # the tokenizer's, not the embedding's 1,024
    assert data["tokens"][0] == {"index": 0, "id": 1, "piece": "<s>", "text": "<s>", "kind": "special", "byte": None,
                                 "joined": None}
    assert [t["byte"] for t in data["tokens"] if t["kind"] == "byte"] == list(EMOJI.encode())
    assert data["tokens"][-1]["joined"] == EMOJI


def test_cli_empty_text_is_refused():
    result = runner.invoke(app, ["tokens", "  ", "--model", "tiny"])
    assert result.exit_code == 2 and "empty" in result.stderr


def test_phi3_tokenizer(phi3_tokenizer_dir):
    result = runner.invoke(app, ["tokens", "Hello world", "--model", str(phi3_tokenizer_dir), "--chat", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    pieces = [t["piece"] for t in data["tokens"]]
    assert pieces[0] == "<|user|>" and "<|assistant|>" in pieces and "▁world" in pieces
    assert data["vocab_size"] >= 32000
