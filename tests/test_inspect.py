"""`llm inspect`: the architecture card and module tree, from configs on the meta device."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.inside.anatomy import anatomy_from_config, anatomy_of, attention_kind, inspect_model
from lookinside.core.model.spec import LoadSpec
from lookinside.ui.anatomy import compact, human_bytes, short_count

from .conftest import small_config

ANSI = re.compile(r"\x1b\[")
PHI3_MINI_PARAMETERS = 3_821_079_552
runner = CliRunner()


@pytest.fixture(scope="module")
def phi3_mini():
    return inspect_model(LoadSpec())


def real_count(config) -> int:
    """Parameters of the same config built for real on the CPU, to check the meta-device count."""
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def find(node, name):
    return next(c for c in node.children if c.name == name)


def test_phi3_mini_card_from_the_carried_config(phi3_mini):
    card = phi3_mini.card
    assert card.parameters == PHI3_MINI_PARAMETERS
    assert (card.attention, card.heads, card.kv_heads, card.group_size) == ("MHA", 32, 32, 1)
    assert (card.layers, card.hidden_size, card.head_dim, card.vocab_size) == (32, 3072, 96, 32064)
    assert card.ffn == "SwiGLU (fused gate/up)" and card.intermediate_size == 8192
    assert (card.norm, card.norm_eps) == ("RMSNorm", 1e-5)
    assert card.positions == "RoPE" and card.rope["rope_theta"] == 10000.0
    assert (card.sliding_window, card.context_length, card.tied_embeddings) == (2047, 4096, False)
    assert card.weight_bytes == {"float32": 4 * PHI3_MINI_PARAMETERS, "bfloat16": 2 * PHI3_MINI_PARAMETERS,
                                 "float16": 2 * PHI3_MINI_PARAMETERS}
    assert card.kv_bytes_per_token["bfloat16"] == 2 * 32 * 32 * 96 * 2  # K and V, every layer, 2 bytes


def test_phi3_mini_tree_is_the_books(phi3_mini):
    tree = phi3_mini.tree
    assert tree.kind == "Phi3ForCausalLM" and tree.parameters == PHI3_MINI_PARAMETERS
    model, lm_head = find(tree, "model"), find(tree, "lm_head")
    assert lm_head.parameters == 3072 * 32064 and lm_head.tied_to is None
    layers = find(model, "layers")
    assert [(c.name, c.repeat, c.kind) for c in layers.children] == [("0-31", 32, "Phi3DecoderLayer")]
    block = layers.children[0]
    assert [c.name for c in find(block, "self_attn").children] == ["o_proj", "qkv_proj"]
    assert [c.name for c in find(block, "mlp").children] == ["gate_up_proj", "down_proj", "activation_fn"]
    assert block.total_parameters == layers.parameters
    assert model.parameters + lm_head.parameters == PHI3_MINI_PARAMETERS
    assert "resid_attn_dropout" not in [c.name for c in block.children]  # dropouts do nothing at inference


@pytest.mark.parametrize(
    ("kind", "attention", "group", "ffn", "projections"),
    [
        ("phi3-gqa", "GQA", 2, "SwiGLU (fused gate/up)", ["o_proj", "qkv_proj"]),
        ("phi3-mha", "MHA", 1, "SwiGLU (fused gate/up)", ["o_proj", "qkv_proj"]),
        ("llama", "GQA", 2, "SwiGLU", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ],
)
def test_small_configs(kind, attention, group, ffn, projections):
    config = small_config(kind)
    anatomy = anatomy_from_config(kind, config)
    card = anatomy.card
    assert (card.attention, card.group_size, card.ffn) == (attention, group, ffn)
    assert card.parameters == real_count(config)  # the meta model counts what a real one holds
    block = anatomy.tree.children[0].children[1].children[0]  # model -> layers -> the collapsed block
    assert block.repeat == 2 and block.name == "0-1"
    assert [c.name for c in find(block, "self_attn").children] == projections


def test_mqa_and_tied_embeddings_llama():
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True)
    anatomy = anatomy_from_config("llama-mqa", config)
    assert anatomy.card.attention == "MQA" and anatomy.card.kv_bytes_per_token["float32"] == 2 * 3 * 1 * 16 * 4
    assert anatomy.card.tied_embeddings
    assert anatomy.card.parameters == real_count(config)  # the shared matrix is counted once
    assert find(anatomy.tree, "lm_head").tied_to == "model.embed_tokens"


def test_gpt2_reads_without_llama_names():
    from transformers import GPT2Config

    config = GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    card = anatomy_from_config("gpt2-small-random", config).card
    assert (card.attention, card.layers, card.hidden_size, card.head_dim) == ("MHA", 2, 64, 16)
    assert card.norm == "LayerNorm" and card.positions == "learned absolute"
    assert card.ffn.startswith("MLP") and card.context_length == 128
    assert card.parameters == real_count(config)


def test_tiny_from_weights_matches_its_config(tiny):
    loaded = anatomy_of("tiny", tiny.model).card
    assert loaded.parameters == sum(p.numel() for p in tiny.model.parameters())
    assert (loaded.attention, loaded.heads, loaded.kv_heads) == ("GQA", 4, 2)
    assert loaded == anatomy_from_config("tiny", tiny.model.config).card


def test_meta_model_allocates_nothing():
    from lookinside.core.inside.anatomy import meta_model

    model = meta_model(small_config("llama"))
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize(("heads", "kv", "kind"), [(32, 32, "MHA"), (32, 8, "GQA"), (32, 1, "MQA")])
def test_attention_kind(heads, kv, kind):
    assert attention_kind(heads, kv) == kind


def test_formatting_helpers():
    assert human_bytes(393216) == "384 KiB" and human_bytes(7_642_159_104) == "7.12 GiB"
    assert short_count(PHI3_MINI_PARAMETERS) == "3.82 B"
    assert compact("in_features=3072, out_features=9216, bias=False") == "3072 → 9216"
    assert compact("in_features=4, out_features=8, bias=True") == "4 → 8, bias"
    assert compact("(3072,), eps=1e-05") == "(3072,), eps=1e-05"


def test_cli_default_model_offline():
    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert not ANSI.search(out)
    assert "3,821,079,552" in out and "MHA: 32 heads" in out and "(32 KV heads)" in out
    assert "0-31: 32 × Phi3DecoderLayer" in out and "qkv_proj: Linear(3072 → 9216)" in out
    assert "SwiGLU (fused gate/up)" in out and "RMSNorm, eps 1e-05" in out and "2,047 tokens" in out
    assert "bf16 7.12 GiB" in out and "384 KiB per token" in out


def test_cli_json_fields():
    result = runner.invoke(app, ["inspect", "--model", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    card = data["card"]
    assert {k: card[k] for k in ("layers", "hidden_size", "heads", "kv_heads", "attention", "vocab_size")} == {
        "layers": 4, "hidden_size": 128, "heads": 4, "kv_heads": 2, "attention": "GQA", "vocab_size": 1024}
    assert card["parameters"] == sum(_params(data["tree"]["children"]))
    assert data["tree"]["kind"] == "Phi3ForCausalLM" and data["quantized"] is None


def _params(children):
    return [c["parameters"] for c in children]


def test_cli_uncached_hub_model_fails_cleanly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["inspect", "--model", "someone/not-cached-model"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and "Traceback" not in result.output
    assert "cannot reach the Hugging Face Hub" in " ".join(result.stderr.split())


def test_unbuildable_config_is_a_typed_error(monkeypatch):
    from transformers import AutoModelForCausalLM

    from lookinside.core.errors import LookinsideError

    calls = []

    def broken(config, **kwargs):
        calls.append(1)
        raise RuntimeError("Cannot copy out of meta tensor\nmore detail")

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", broken)
    with pytest.raises(LookinsideError, match="cannot build LlamaConfig without weights: Cannot copy out of meta"):
        anatomy_from_config("broken", small_config("llama"))
    assert len(calls) == 2  # torch's meta device, then accelerate's init_empty_weights
