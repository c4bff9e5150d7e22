"""Loading: sources, device and dtype choice, and one clear error for each way it fails."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lookinside.core import errors
from lookinside.core.model import loaded, loading
from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec, parse_max_memory
from lookinside.tiny import ASSETS

from .conftest import random_model_dir, small_config


def fake_cuda(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert loaded.resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert loaded.resolve_device("auto").type == "mps"
    fake_cuda(monkeypatch, (8, 0))
    assert loaded.resolve_device("auto").type == "cuda"
    assert loaded.resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((7, 5), torch.float16), ((6, 1), torch.float16)],
)
def test_auto_dtype_on_cuda_follows_bf16_support(monkeypatch, capability, expected):
    fake_cuda(monkeypatch, capability)
    assert loaded.resolve_dtype("auto", torch.device("cuda")) == expected


def test_auto_dtype_off_cuda_and_explicit_dtype():
    assert loaded.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert loaded.resolve_dtype("auto", torch.device("mps")) == torch.float16
    assert loaded.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_auto_dtype_on_the_cpu_keeps_a_bf16_checkpoint_where_the_cpu_has_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(loaded, "cpu_has_bf16", lambda: True)
    assert loaded.resolve_dtype("auto", cpu, torch.bfloat16) == torch.bfloat16
    assert loaded.resolve_dtype("auto", cpu, torch.float32) == torch.float32  # tiny: never converted down
    assert loaded.resolve_dtype("auto", cpu, torch.float16) == torch.float32
    monkeypatch.setattr(loaded, "cpu_has_bf16", lambda: False)
    assert loaded.resolve_dtype("auto", cpu, torch.bfloat16) == torch.float32  # emulated bf16 is slow


def test_cuda_asked_for_but_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(errors.DeviceUnavailable, match="--device cuda"):
        loaded.resolve_device("cuda")


def test_cuda_index_past_the_last_gpu(monkeypatch):
    fake_cuda(monkeypatch, (8, 0))
    with pytest.raises(errors.DeviceUnavailable, match="only 2 CUDA GPUs"):
        loaded.resolve_device("cuda:5")


def test_spec_refuses_unknown_device_dtype_and_attention():
    with pytest.raises(errors.BadInput, match="--device"):
        LoadSpec(device="tpu")
    with pytest.raises(errors.BadInput, match="--dtype"):
        LoadSpec(dtype="int4")
    with pytest.raises(errors.BadInput, match="--attn"):
        LoadSpec(attn="magic")


def test_max_memory_parsing():
    assert parse_max_memory("0=20GiB, cpu=64GiB") == {0: "20GiB", "cpu": "64GiB"}
    with pytest.raises(errors.BadInput, match="DEVICE=SIZE"):
        parse_max_memory("20GiB")


def test_tiny_is_a_phi3_with_grouped_query_attention(tiny):
    assert type(tiny.model).__name__ == "Phi3ForCausalLM"
    assert tiny.config.num_attention_heads == 4 and tiny.config.num_key_value_heads == 2
    assert tiny.dtype == torch.float32 and tiny.device.type == "cpu"
    assert tiny.attn_implementation == "sdpa"
    assert tiny.context_length == 512
    ends = tiny.tokenizer.convert_ids_to_tokens(tiny.end_token_ids)
    assert set(ends) == {"<|endoftext|>", "<|end|>", "<|assistant|>"}


def test_tiny_weights_are_small_and_shipped():
    weights = ASSETS / "model.safetensors"
    assert weights.stat().st_size < 5 * 2**20
    assert json.loads((ASSETS / "config.json").read_text())["architectures"] == ["Phi3ForCausalLM"]


def test_local_directory_and_attention_choice(tmp_path):
    path = random_model_dir(tmp_path / "llama", small_config("llama"))
    lm = loading.load(LoadSpec(model=str(path), device="cpu", attn="eager"))
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    assert lm.attn_implementation == "eager"


def test_missing_directory_is_model_not_found(tmp_path):
    with pytest.raises(errors.ModelNotFound, match="no such directory"):
        loading.load(LoadSpec(model=str(tmp_path / "nope"), device="cpu"))


def test_hub_id_without_network_or_cache_says_what_to_do(monkeypatch):
    monkeypatch.setattr(loading, "_cached_on_disk", lambda name: False)
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(errors.ModelUnavailable, match="--model tiny"):
        loading.load(LoadSpec(model="someone/some-model", device="cpu"))


def test_hf_hub_offline_counts_as_no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading._hub_reachable() is False


def test_unknown_hub_id_is_model_not_found():
    from huggingface_hub.errors import HFValidationError

    wrapped = OSError("bad/id is not a local folder and is not a valid model identifier")
    assert isinstance(loaded.translate("bad/id", wrapped), errors.ModelNotFound)
    assert isinstance(loaded.translate("x", HFValidationError("Repo id must ...")), errors.ModelNotFound)


def test_not_a_causal_lm(tmp_path):
    from transformers import T5Config

    T5Config(vocab_size=100, d_model=32, num_layers=1, num_heads=2, d_ff=64).save_pretrained(tmp_path)
    with pytest.raises(errors.NotACausalLM, match="'t5'"):
        loading.load(LoadSpec(model=str(tmp_path), device="cpu"))


def test_corrupted_weights(tmp_path):
    shutil.copytree(ASSETS, tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(errors.CorruptWeights, match="damaged"):
        loading.load(LoadSpec(model=str(tmp_path), device="cpu"))


def test_out_of_memory_while_loading(monkeypatch):
    from transformers import AutoModelForCausalLM

    def explode(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 7.12 GiB")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", explode)
    with pytest.raises(errors.OutOfMemory, match="--device-map auto"):
        loading.load(LoadSpec(model="tiny", device="cpu"))


def test_gpu_loads_go_straight_to_the_device():
    kwargs = loaded.load_kwargs(LoadSpec(), torch.device("cuda"), torch.bfloat16)
    assert kwargs["device_map"] == {"": torch.device("cuda")}
    assert kwargs["dtype"] == torch.bfloat16 and kwargs["trust_remote_code"] is False
    spread = loaded.load_kwargs(LoadSpec(device_map="auto", max_memory={0: "1GiB"}), torch.device("cuda"), torch.float16)
    assert spread["device_map"] == "auto" and spread["max_memory"] == {0: "1GiB"}
    assert "device_map" not in loaded.load_kwargs(LoadSpec(), torch.device("cpu"), torch.float32)


def test_phi3_mini_config_is_carried_for_offline_use():
    config = loading.load_config_offline(DEFAULT_MODEL)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (3072, 32, 32064)
    assert config.num_key_value_heads == 32


@pytest.mark.slow
def test_random_weights_of_the_default_model_work_offline():
    """Phi-3-mini's carried config and tokenizer, one of its 32 layers: its end tokens, its real vocabulary."""
    lm = loading.load(LoadSpec(model=DEFAULT_MODEL, device="cpu", dtype="bfloat16", random_weights=True, layers=1))
    assert lm.config.num_hidden_layers == 1 and lm.config.hidden_size == 3072
    assert lm.end_token_ids == [32000, 32001, 32007]  # from the carried generation_config.json
    assert lm.dtype == torch.bfloat16 and next(lm.model.parameters()).dtype == torch.bfloat16
    assert any("1 of" in note for note in lm.notes) and not any("tokenizer" in note for note in lm.notes)
    assert lm.tokenizer("The capital of France is")["input_ids"] == [1, 450, 7483, 310, 3444, 338]


def test_layers_need_random_weights():
    with pytest.raises(errors.BadInput, match="--random-weights"):
        LoadSpec(model="tiny", layers=2)
