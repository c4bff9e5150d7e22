"""--quantize: int8 weights through torch's dynamic int8 matmuls on the CPU for real; torchao's and bitsandbytes'
configs (GPU) checked by faking CUDA."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lookinside.core.errors import BadInput, LookinsideError
from lookinside.core.inside.diff import compare_sides, read_side
from lookinside.core.inside.predict import next_token
from lookinside.core.model import quantize
from lookinside.core.model.loading import load
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import NextTokenRequest

TEXT = "The capital of France is Paris. The capital of Japan is Tokyo. The capital of Italy is Rome."
needs_torchao = pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")


@pytest.fixture(scope="module")
def tiny_int8():
    return load(LoadSpec(model="tiny", device="cpu", quantize="int8"))


def test_int8_weights_are_really_int8_and_smaller(tiny_int8):
    q = tiny_int8.quantized
    assert q is not None and q.kind == "int8" and q.converted == 17 and q.linear == 17  # the LM head too
    layer = tiny_int8.model.model.layers[0].mlp.down_proj
    assert layer.weight().dtype == torch.qint8 and layer.weight().qscheme() == torch.per_channel_affine
    assert tiny_int8.model.lm_head.weight().dtype == torch.qint8 and tiny_int8.dtype == torch.float32
    assert q.bytes_after < 0.5 * q.bytes_before and q.bytes_before == 1_049_728 * 4
    assert "(torch dynamic int8 matmuls): 17 of 17 linear weights converted; weights 4.0 MiB -> 1.5 MiB" in q.describe()
    assert q.describe() in tiny_int8.notes


def test_int8_still_says_paris_and_stays_close_to_float32(tiny, tiny_int8):
    assert next_token(tiny_int8, NextTokenRequest("The capital of France is")).top[0].token == " Paris"
    diff = compare_sides(read_side(tiny, TEXT, "float32"), read_side(tiny_int8, TEXT, "int8"))
    # Measured on this text: mean 1.8e-03 nats with 8-bit activations (2.1e-02 with torch's default 7), the LM head
    # in int8 too (1.8e-03 with it in float32), every top-1 the same; torchao's weight-only int8 was 3.0e-05 (docs/diff.md), but 7x slower than float32.
    assert 0 < diff.mean_kl < 5e-3 and diff.same_top1 == 1.0


def test_bitsandbytes_needs_cuda():
    with pytest.raises(BadInput, match="needs a CUDA GPU .* use --quantize int4 or int8"):
        load(LoadSpec(model="tiny", device="cpu", quantize="4bit"))


def test_a_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setattr(quantize.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BadInput, match="needs the torchao package: pip install torchao"):
        quantize.quantization_config("int8", torch.device("cuda"), torch.bfloat16)
    assert quantize.quantization_config("int8", torch.device("cpu"), torch.float32) is None  # torch's own kernels
    with pytest.raises(BadInput, match="needs the bitsandbytes package: pip install bitsandbytes"):
        quantize.quantization_config("4bit", torch.device("cuda"), torch.bfloat16)


def test_4bit_is_nf4_computing_in_the_load_dtype(monkeypatch):
    monkeypatch.setattr(quantize.importlib.util, "find_spec", lambda name: object())  # as if bitsandbytes were there
    config = quantize.quantization_config("4bit", torch.device("cuda"), torch.float16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.float16
    assert quantize.quantization_config("8bit", torch.device("cuda"), torch.bfloat16).load_in_8bit


def test_a_load_where_nothing_was_converted_is_refused(tiny):
    with pytest.raises(LookinsideError, match="none of its 17 linear weights was converted"):
        quantize.quantization_facts("int8", tiny.model, torch.float32)


def test_bad_kinds_and_random_weights_are_refused():
    with pytest.raises(BadInput, match="--quantize must be one of int8, 8bit, 4bit"):
        LoadSpec(model="tiny", quantize="2bit")
    with pytest.raises(BadInput, match="needs real weights"):
        LoadSpec(model="tiny", quantize="int8", random_weights=True)


def test_inspect_estimates_phi3_minis_4bit_footprint_from_the_config():
    from typer.testing import CliRunner

    from lookinside.cli.app import app

    result = CliRunner().invoke(app, ["inspect", "--quantize", "4bit", "--json"])
    import json

    estimate = json.loads(result.output)["quantize_estimate"]
    # 32 blocks of 113,246,208 linear weights at 4 bits, an fp32 absmax per 64 of them; embeddings and head at 16 bits.
    assert estimate["converted_params"] == 32 * 113_246_208 and estimate["kept_params"] == 197_200_896
    assert estimate["total_bytes"] == 3_623_878_656 // 2 + 3_623_878_656 // 64 * 4 + 197_200_896 * 2
    assert 2.2e9 < estimate["total_bytes"] < 2.5e9  # about 2.3 GB, against 7.6 GB in bf16
    view = CliRunner().invoke(app, ["inspect", "--quantize", "4bit"]).output
    assert "weights in all          2.27 GiB (against 7.12 GiB in bf16/fp16)" in view


@pytest.mark.slow
def test_library_warnings_stay_off_the_terminal():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "lookinside", "next-token", "hi", "--model", "tiny"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and out.stderr == ""


@needs_torchao
def test_chats_stats_line_says_the_weights_are_int8(tiny_int8):
    import io

    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    from rich.console import Console

    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.defaults import ChatSettings
    from lookinside.core.decoding.sampling import SamplingParams
    from lookinside.ui.repl import ChatRepl, make_session

    console = Console(file=io.StringIO(), width=200)
    with create_pipe_input() as pipe:
        pipe.send_text("What is the capital of Japan?\r")
        pipe.close()
        session = make_session(keep_history=False, input=pipe, output=DummyOutput())
        conversation = Conversation(settings=ChatSettings(params=SamplingParams(temperature=0)))
        ChatRepl(tiny_int8, conversation, console, session, "plain").run()
    assert "int8 weights 1.5 MiB (from 4.0 MiB)" in console.file.getvalue()
