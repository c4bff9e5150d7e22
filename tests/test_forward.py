"""`llm forward`: stage shapes read with hooks, identical blocks collapsed, any architecture."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.inside.hooks import (
    Stage,
    collapse_layers,
    find_final_norm,
    find_layers,
    find_lm_head,
    trace_forward,
)

from .conftest import random_model_dir, small_config

runner = CliRunner()
PROMPT = "The capital of France is"  # 6 tokens with the tiny tokenizer's BOS


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    path = random_model_dir(tmp_path_factory.mktemp("llama"), small_config("llama"))
    return load(LoadSpec(model=str(path), device="cpu"))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from transformers import GPT2Config

    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    config = GPT2Config(vocab_size=1024, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    path = random_model_dir(tmp_path_factory.mktemp("gpt2"), config)
    return load(LoadSpec(model=str(path), device="cpu"))


def by_path(stages):
    return {s.path: s for s in stages}


def test_tiny_shapes(tiny):
    result = trace_forward(tiny, PROMPT)
    assert result.input_shape == (1, 6)
    before, after = by_path(result.before), by_path(result.after)
    assert before["model.embed_tokens"].output_shape == (1, 6, 128)
    assert "model" not in before  # the wrapper around the whole stack says nothing new
    assert after["model.norm"].output_shape == (1, 6, 128) and after["lm_head"].output_shape == (1, 6, 1024)
    assert [(r.first, r.last, r.count) for r in result.blocks] == [(0, 3, 4)]  # 4 identical blocks, once
    block = by_path(result.blocks[0].stages)
    assert block[""].kind == "Phi3DecoderLayer" and block[""].output_shape == (1, 6, 128)
    # fused Q, K, V: 4 query heads and 2 KV heads of 32 dims -> 128 + 64 + 64
    assert block["self_attn.qkv_proj"].output_shape == (1, 6, 256)
    assert block["self_attn"].output_shape == (1, 6, 128)
    assert block["mlp.gate_up_proj"].output_shape == (1, 6, 768)
    assert block["mlp.down_proj"].input_shape == (1, 6, 384)
    assert result.head_shapes == {"queries": (1, 4, 6, 32), "keys, values": (1, 2, 6, 32),
                                  "scores, weights": (1, 4, 6, 6)}


def test_stages_come_in_call_order(tiny):
    paths = [s.path for s in trace_forward(tiny, PROMPT).blocks[0].stages]
    assert paths.index("input_layernorm") < paths.index("self_attn") < paths.index("self_attn.qkv_proj")
    assert paths.index("self_attn.o_proj") < paths.index("post_attention_layernorm") < paths.index("mlp")


def test_llama_separate_projections(llama):
    result = trace_forward(llama, PROMPT)
    block = by_path(result.blocks[0].stages)
    assert block["self_attn.q_proj"].output_shape == (1, 6, 64)
    assert block["self_attn.k_proj"].output_shape == (1, 6, 32)  # GQA: 2 KV heads of 16 dims
    assert block["mlp.gate_proj"].output_shape == (1, 6, 128)
    assert result.blocks[0].count == 2


def test_gpt2_finds_its_parts(gpt2):
    assert find_layers(gpt2.model)[0] == "transformer.h"
    assert type(find_final_norm(gpt2.model)).__name__ == "LayerNorm"
    assert find_lm_head(gpt2.model) is gpt2.model.lm_head
    result = trace_forward(gpt2, PROMPT)
    assert by_path(result.after)["lm_head"].output_shape == (1, 6, 1024)
    assert by_path(result.before)["transformer.wpe"].output_shape[-1] == 64


def test_collapse_keeps_a_different_block_apart():
    def block(layer, width):
        return [Stage("", "Block", (1, 2, 8), (1, 2, 8), layer), Stage("mlp", "MLP", (1, 2, 8), (1, 2, width), layer)]

    stages = block(0, 8) + block(1, 8) + block(2, 16) + block(3, 8) + block(4, 8)
    runs = collapse_layers(stages)
    assert [(r.first, r.last) for r in runs] == [(0, 1), (2, 2), (3, 4)]
    assert runs[1].stages[1].output_shape == (1, 2, 16)


def test_cli_view():
    result = runner.invoke(app, ["forward", PROMPT, "--model", "tiny"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "blocks 0-3 (4 ×)" in out and "qkv_proj" in out and "[1, 6, 256]" in out
    assert "lm_head" in out and "[1, 6, 1024]" in out and "Q per head" in out
    assert out.count("qkv_proj") == 1  # the repeated blocks are not printed four times


def test_cli_json():
    result = runner.invoke(app, ["forward", PROMPT, "--model", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["input_shape"] == [1, 6] and data["blocks"][0]["count"] == 4
    assert data["after"][-1] == {"path": "lm_head", "kind": "Linear", "input_shape": [1, 6, 128],
                                 "output_shape": [1, 6, 1024], "layer": None}
    assert data["kv_heads"] == 2 and data["head_shapes"]["keys, values"] == [1, 2, 6, 32]


def test_cli_empty_prompt():
    result = runner.invoke(app, ["forward", " ", "--model", "tiny"])
    assert result.exit_code == 2 and "empty" in result.stderr
