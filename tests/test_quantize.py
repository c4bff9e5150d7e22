"""--quantize: int8 weights through torch's dynamic int8 matmuls and int4 / int8 weight-only layers on the CPU for
real; torchao's and bitsandbytes' configs (GPU) checked by faking CUDA."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.errors import BadInput, LookinsideError
from lookinside.core.inside.diff import compare_sides, read_side
from lookinside.core.inside.predict import next_token
from lookinside.core.model import int4_kernel, quantize
from lookinside.core.model.loading import load
from lookinside.core.model.packed import Int4Linear, Int8Linear
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
    with pytest.raises(BadInput, match="--quantize must be one of int8, int8-weight, int8-dynamic, int4, 8bit, 4bit, float"):
        LoadSpec(model="tiny", quantize="2bit")
    with pytest.raises(BadInput, match="needs real weights"):
        LoadSpec(model="tiny", quantize="int8", random_weights=True)


def test_inspect_estimates_phi3_minis_4bit_footprint_from_the_config():
    from typer.testing import CliRunner

    from lookinside.cli.app import app

    result = CliRunner().invoke(app, ["inspect", "--quantize", "4bit", "--json"])
    import json

    estimate = json.loads(result.output)["quantized"]
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
    from lookinside.core.sampling_params import SamplingParams
    from lookinside.ui.repl import ChatRepl, make_session

    console = Console(file=io.StringIO(), width=200)
    with create_pipe_input() as pipe:
        pipe.send_text("What is the capital of Japan?\r")
        pipe.close()
        session = make_session(keep_history=False, input=pipe, output=DummyOutput())
        conversation = Conversation(settings=ChatSettings(params=SamplingParams(temperature=0)))
        ChatRepl(tiny_int8, conversation, console, session, "plain").run()
    assert "int8 weights 1.5 MiB (from 4.0 MiB)" in console.file.getvalue()


@pytest.fixture(scope="module")
def weight_only():
    return {kind: load(LoadSpec(model="tiny", device="cpu", quantize=kind)) for kind in ("int4", "int8-weight")}


def kl_from_float(tiny, lm) -> tuple[float, float]:
    """Mean KL from float32, and the share of positions whose top-1 agrees, over TEXT."""
    ids = tiny.tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.inference_mode():
        a = torch.log_softmax(tiny.model(ids).logits.float(), -1)
        b = torch.log_softmax(lm.model(ids).logits.float(), -1)
    return (a.exp() * (a - b)).sum(-1).mean().item(), (a.argmax(-1) == b.argmax(-1)).float().mean().item()


@pytest.mark.parametrize(("kind", "layer", "bits"), [("int4", Int4Linear, 4), ("int8-weight", Int8Linear, 8)])
def test_weight_only_kinds_pack_every_linear_layer_and_stay_close(tiny, weight_only, kind, layer, bits):
    lm = weight_only[kind]
    assert sum(isinstance(m, layer) for m in lm.model.modules()) == 17  # the LM head too
    assert not any(isinstance(m, torch.nn.Linear) for m in lm.model.modules())
    q = lm.quantized
    assert q.kind == kind and q.converted == q.linear == 17
    assert q.method == (int4_kernel.method() if kind == "int4" else quantize.WEIGHT_ONLY_METHOD)
    # float32 -> 4 or 8 bits for the linear weights; the float32 embedding (an eighth of the weights) stays
    assert q.bytes_after < q.bytes_before * (0.3 if bits == 4 else 0.4)
    assert next_token(lm, NextTokenRequest("The capital of France is", top_k=1)).top[0].token == " Paris"
    kl, same = kl_from_float(tiny, lm)
    assert 0 < kl < (0.05 if bits == 4 else 0.01) and same >= 0.9


def test_a_quantized_model_counts_the_parameters_of_its_float_checkpoint(tiny, tiny_int8, weight_only):
    # the packed layers hold their weights as buffers and fbgemm's int8 as packed data: none is a parameter
    float_count = sum(p.numel() for p in tiny.model.parameters())
    for lm in (tiny_int8, *weight_only.values()):
        assert sum(p.numel() for p in lm.model.parameters()) < float_count / 2
        assert quantize.parameter_count(lm.model) == quantize.parameter_count(tiny.model) == float_count
    result = CliRunner().invoke(app, ["bench", "--model", "tiny", "--device", "cpu", "--quantize", "int4", "-n", "4",
                                      "-r", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["header"]["parameters"] == float_count


def test_int4_groups_round_trip_within_half_a_step():
    weight = torch.randn(32, 128)
    values, scales, zeros = quantize.int4_groups(weight, 32)
    assert values.dtype == torch.uint8 and values.max() <= 15 and scales.shape == (32, 4)
    back = (values.float().unflatten(-1, (4, 32)) - 8) * scales[..., None] + zeros[..., None]
    assert ((back.flatten(-2) - weight).abs() <= scales.repeat_interleave(32, -1) / 2 + 1e-6).all()


def test_a_shape_the_int4_kernel_cannot_take_falls_back_to_int8():
    layer = quantize.packed_linear(torch.randn(24, 64), None, "int4", torch.device("cpu"))  # 24 rows: not 16k
    assert isinstance(layer, Int8Linear)
    x = torch.randn(2, 3, 64)
    assert layer(x).shape == (2, 3, 24)


def test_int8_is_the_faster_kind_on_the_cpu_and_the_others_are_reachable():
    cpu = torch.device("cpu")
    assert quantize.resolve_kind("int8", cpu) == quantize.CPU_INT8 == "int8-dynamic"
    assert quantize.weight_only("int4", cpu) and quantize.weight_only("int8-weight", cpu)
    assert quantize.dynamic_int8("int8-dynamic", cpu) and not quantize.weight_only("int8", cpu)
    assert quantize.quantization_config("int4", cpu, torch.float32) is None
    with pytest.raises(BadInput, match="--quantize int4 runs on the CPU or a CUDA GPU, not on mps"):
        quantize.quantization_config("int4", torch.device("mps"), torch.float32)


def test_diff_against_quantize_reports_kl_and_top1_for_each_kind():
    runner = CliRunner()
    for kind in ("int4", "int8-weight", "int8-dynamic"):
        result = runner.invoke(app, ["diff", TEXT, "--model", "tiny", "--device", "cpu", "--against-quantize", kind,
                                     "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["how_b"] == f"float32, sdpa, quantized {kind}"
        assert 0 < report["mean_kl"] < 0.05 and report["same_top1"] >= 0.9


def test_bench_with_int4_runs_on_the_cpu():
    result = CliRunner().invoke(app, ["bench", "--model", "tiny", "--device", "cpu", "--quantize", "int4", "-n", "4",
                                      "-r", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert "int4" in result.output


def test_compiled_int4_decodes_the_same_tokens_as_eager(weight_only):
    from lookinside.core.bench.run import our_loop

    lm = weight_only["int4"]
    prompt = lm.tokenizer("The capital of France is").input_ids
    eager = our_loop(lm, prompt, "static", 6)()
    compiled = our_loop(lm, prompt, "static", 6, compile=True)()
    assert compiled.token_ids == eager.token_ids
