"""Phi-3-mini's real tokenizer, carried in the package: the default model's tokens work offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lookinside.core.model.loading import CARRIED_CONFIGS, load_tokenizer
from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec

FRANCE_IDS = [1, 450, 7483, 310, 3444, 338]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
RENDERED = "<|system|>\nBe brief.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def phi3():
    return load_tokenizer(LoadSpec(model=DEFAULT_MODEL))


def test_the_carried_tokenizer_is_phi3s(phi3):
    assert phi3("The capital of France is")["input_ids"] == FRANCE_IDS
    assert phi3.convert_ids_to_tokens(FRANCE_IDS) == ["<s>", "▁The", "▁capital", "▁of", "▁France", "▁is"]
    assert phi3.convert_ids_to_tokens([32000, 32001, 32006, 32007, 32010]) == [
        "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]
    assert phi3.convert_ids_to_tokens(phi3("🦙", add_special_tokens=False)["input_ids"])[-4:] == [
        "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]


def test_the_chat_template_renders_phi3s_turns(phi3):
    assert phi3.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == RENDERED


def test_it_matches_the_shared_reference_where_present(phi3, phi3_tokenizer_dir):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(phi3_tokenizer_dir)
    text = "Write an email to Sarah 🦙 about the garden, in 3 lines.\n<|user|>"
    assert phi3(text)["input_ids"] == reference(text)["input_ids"]
    assert phi3.apply_chat_template(CHAT, tokenize=False) == reference.apply_chat_template(CHAT, tokenize=False)


def test_only_tokenizer_files_are_carried_no_weights():
    names = sorted(p.name for p in CARRIED_CONFIGS[DEFAULT_MODEL].iterdir())
    assert names == ["README.md", "chat_template.jinja", "config.json", "generation_config.json",
                     "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.slow
def test_llm_tokens_for_the_default_model_needs_no_network():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOOKINSIDE_MODEL": ""}
    env.pop("LOOKINSIDE_MODEL")
    out = subprocess.run([sys.executable, "-m", "lookinside", "tokens", "The capital of France is", "--json"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["model"] == DEFAULT_MODEL
    assert [t["id"] for t in data["tokens"]] == FRANCE_IDS
