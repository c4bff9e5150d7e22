"""Speed work never changes tokens: compiled = eager = model.generate; compiled once; CPU bandwidth measured once."""

from __future__ import annotations

import json

import pytest
import torch

from lookinside.core.bench.run import run_bench
from lookinside.core.decoding.compiled import MIN_CACHE, Compiled, cache_length
from lookinside.core.decoding.generate import collect
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.errors import BadInput
from lookinside.core.model import bandwidth
from lookinside.core.request import BenchSettings, GenerationSettings
from lookinside.core.sampling_params import SamplingParams
from lookinside.core.wire import to_wire

GREEDY = SamplingParams(temperature=0)
N = 24


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def compiled_tiny():
    """The tiny model loaded on its own (its compiled step lives with it), compiled by one warm-up run."""
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    lm = load(LoadSpec(model="tiny", device="cpu", threads=1))
    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=4, ignore_eos=True, compile=True))
    if Compiled.for_model(lm).note:
        pytest.skip(Compiled.for_model(lm).note)
    return lm


def test_compiled_equals_eager_equals_model_generate(compiled_tiny):
    lm = compiled_tiny
    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    eager = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    compiled = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True, compile=True))
    reference = lm.model.generate(torch.tensor([prompt]), max_new_tokens=N, do_sample=False, eos_token_id=None,
                                  pad_token_id=0)[0, len(prompt):].tolist()
    assert compiled.token_ids == eager.token_ids == reference
    assert compiled.steps[0].text == " Paris"
    # the probabilities it reports come from the compiled logits, and agree with the eager ones
    for ours, theirs in zip(compiled.steps, eager.steps):
        assert ours.prob == pytest.approx(theirs.prob, rel=1e-4, abs=1e-6) and ours.rank == theirs.rank


def test_the_step_compiles_once_and_never_again(compiled_tiny):
    lm = compiled_tiny
    before = _graphs()
    for text, n in (("Write an email to Sarah", 40), ("The capital of France is", 7), ("Once upon a time", 100)):
        prompt = encode_prompt(lm.tokenizer, text)
        collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=n, ignore_eos=True, compile=True))
    assert _graphs() == before  # other prompts and lengths within the cache's length: no recompilation


def test_int8_compiles_and_equals_eager_int8():
    """The CPU's int8 layers hold opaque fbgemm weights; under torch.compile they call lookinside::int8_linear,
    so `--compile --quantize int8` compiles (no eager fallback) and picks the eager int8 tokens."""
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    lm = load(LoadSpec(model="tiny", device="cpu", threads=1, quantize="int8"))
    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    eager = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    settings = GenerationSettings(max_new_tokens=N, ignore_eos=True, compile=True)
    compiled = collect(lm, prompt, GREEDY, settings)
    assert Compiled.for_model(lm).note is None
    before = _graphs()
    again = collect(lm, prompt, GREEDY, settings)
    assert compiled.token_ids == again.token_ids == eager.token_ids and compiled.steps[0].text == " Paris"
    assert _graphs() == before


def test_a_sliding_window_model_compiles_once_and_agrees(tmp_path):
    """Phi-3-mini has a 2,047-token window: transformers' windowed static cache counts in a Python int, which
    would recompile the step at every position; a run inside the window uses a windowless cache."""
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    from .conftest import random_model_dir, small_config

    config = small_config("phi3-gqa")
    config.sliding_window = 200  # longer than the runs below, as 2,047 is for Phi-3-mini's usual runs
    lm = load(LoadSpec(model=str(random_model_dir(tmp_path, config)), device="cpu", threads=1))
    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    settings = GenerationSettings(max_new_tokens=N, ignore_eos=True, compile=True)
    collect(lm, prompt, GREEDY, settings)  # warm-up: compiles
    before = _graphs()
    compiled = collect(lm, prompt, GREEDY, settings)
    eager = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    assert Compiled.for_model(lm).note is None
    assert _graphs() == before and compiled.token_ids == eager.token_ids
    assert len(set(eager.token_ids)) > 3  # a random model wanders: the ids really test the cache


def test_sampled_compiled_run_equals_the_eager_one(compiled_tiny):
    lm = compiled_tiny
    prompt = encode_prompt(lm.tokenizer, "Once upon a time")
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=7)
    eager = collect(lm, prompt, params, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    compiled = collect(lm, prompt, params, GenerationSettings(max_new_tokens=N, ignore_eos=True, compile=True))
    assert compiled.token_ids == eager.token_ids


def test_a_greedy_compiled_step_picks_and_observes_in_one_call(compiled_tiny, monkeypatch):
    """Greedy without processors: one compiled call a token (the step, the argmax, the observation), none apart."""
    lm = compiled_tiny
    held = Compiled.for_model(lm)
    calls = {"greedy": 0, "step": 0}

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(held, "_greedy", counted("greedy", held._greedy))
    if held.step is not None:
        monkeypatch.setattr(held, "step", counted("step", held.step))
    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    replays = held.replays
    run = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True, compile=True))
    eager = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    # the first token comes from the eager prefill; two steps through dynamo's guards, then the graph replayed
    assert calls == {"greedy": 2, "step": 0} and held.replays - replays == N - 3
    assert run.token_ids == eager.token_ids
    for ours, theirs in zip(run.steps, eager.steps):
        assert ours.top[0][0] == theirs.top[0][0] and ours.rank == theirs.rank == 1
        assert ours.prob == pytest.approx(theirs.prob, rel=1e-4, abs=1e-6)


def test_a_greedy_run_with_a_penalty_keeps_two_calls_and_equals_eager(compiled_tiny):
    """A repetition penalty picks from processed scores, so the token is picked outside the compiled step."""
    lm = compiled_tiny
    prompt = encode_prompt(lm.tokenizer, "Once upon a time")
    params = SamplingParams(temperature=0, repetition_penalty=1.5)
    eager = collect(lm, prompt, params, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    compiled = collect(lm, prompt, params, GenerationSettings(max_new_tokens=N, ignore_eos=True, compile=True))
    plain = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    assert compiled.token_ids == eager.token_ids != plain.token_ids  # the penalty really changed the path
    assert Compiled.for_model(lm).step is not None
    for ours, theirs in zip(compiled.steps, eager.steps):
        assert ours.prob == pytest.approx(theirs.prob, rel=1e-4, abs=1e-6) and ours.rank == theirs.rank


def test_the_compiled_step_leaves_the_models_attention_as_it_was(compiled_tiny):
    """The step is traced with eager attention on the CPU; the model itself keeps its own (SDPA) before and after."""
    lm = compiled_tiny
    attention = {module.config._attn_implementation for module in lm.model.modules() if hasattr(module, "config")}
    assert attention == {"sdpa"}
    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=8, ignore_eos=True, compile=True))
    after = {module.config._attn_implementation for module in lm.model.modules() if hasattr(module, "config")}
    assert after == attention


def test_a_stream_still_running_does_not_share_its_cache(compiled_tiny):
    lm = compiled_tiny
    from lookinside.core.decoding.generate import generate

    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    settings = GenerationSettings(max_new_tokens=8, ignore_eos=True, compile=True)
    first = generate(lm, prompt, GREEDY, settings)
    head = [next(first).token_id for _ in range(3)]
    second = collect(lm, prompt, GREEDY, settings)  # while the first is paused half-way
    rest = [step.token_id for step in first]
    assert head + rest == second.token_ids


@pytest.mark.parametrize("broken, message", [
    (None, "no working C compiler found"),  # every compiled function: the observation fails first
    ("_forward_greedy", "out of memory"),  # the fused greedy step alone
])
def test_a_failed_compile_falls_back_to_eager_with_one_note(tiny, monkeypatch, broken, message):
    real = torch.compile

    def compile_(fn, *args, **kwargs):
        if broken is not None and getattr(fn, "__name__", "") != broken:
            return real(fn, *args, **kwargs)

        def step(*a, **k):
            raise RuntimeError(f"inductor: {message}\nmore detail")
        return step

    monkeypatch.setattr(torch, "compile", compile_)
    lm = _fresh_lm()
    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    compiled = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True, compile=True))
    eager = collect(tiny, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    note = Compiled.for_model(lm).note
    assert compiled.token_ids == eager.token_ids and len(compiled.steps) == N
    assert note and message in note and "eagerly" in note and "\n" not in note


def test_compile_without_the_cache_is_refused():
    with pytest.raises(BadInput, match="--compile needs the KV cache"):
        GenerationSettings(cache="none", compile=True)


def test_a_run_past_the_window_decodes_eagerly_with_a_note(tiny):
    from dataclasses import replace

    from lookinside.core.decoding.compiled import run_cache_length

    config = tiny.config.__class__.from_dict({**tiny.config.to_dict(), "sliding_window": 64})
    assert run_cache_length(config, 40, 512) == 64  # inside the window: the window caps the power of two
    assert run_cache_length(config, 100, 512) == 256
    lm = replace(_fresh_lm(), name="windowed")
    lm.model.config.sliding_window = 64
    prompt = encode_prompt(lm.tokenizer, "The capital of France is")
    run = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=80, ignore_eos=True, compile=True))
    assert len(run.steps) == 80 and "passes the model's 64-token attention window" in Compiled.for_model(lm).note


def test_cache_length_rounds_up_to_a_power_of_two_within_the_context():
    assert cache_length(10, 4096) == MIN_CACHE
    assert cache_length(257, 4096) == 512
    assert cache_length(3000, 4096) == 4096
    assert cache_length(300, 400) == 400  # never past the context
    assert cache_length(600, 512) == 600  # nor below what the run needs (check_fits refuses that earlier)


def test_bench_compile_notes_and_the_static_mode(compiled_tiny):
    settings = BenchSettings(new_tokens=6, warmup=0, repeat=1, threads=1, reference=False, compile=True)
    report = run_bench(compiled_tiny, settings)
    assert [run.cache for run in report.runs] == ["static", "none"]
    assert any("torch.compile'd" in note for note in report.notes)
    assert not any("compiled" in note and "more time" in note for note in report.notes)
    assert report.runs[0].token_ids == report.runs[1].token_ids


# --- the CPU's memory bandwidth ----------------------------------------------------------------

def test_bandwidth_is_measured_once_and_cached(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return 12.5

    first, cached = bandwidth.cpu_bandwidth("Test CPU", 2, measure, tmp_path)
    again, cached_again = bandwidth.cpu_bandwidth("Test CPU", 2, measure, tmp_path)
    other, _ = bandwidth.cpu_bandwidth("Test CPU", 1, lambda: 7.0, tmp_path)
    assert (first.gbs, cached, again.gbs, cached_again, other.gbs) == (12.5, False, 12.5, True, 7.0)
    assert len(calls) == 1
    assert set(json.loads((tmp_path / bandwidth.CACHE_FILE).read_text())) == {"Test CPU | 2 threads",
                                                                               "Test CPU | 1 threads"}


def test_a_damaged_cache_is_measured_past(tmp_path):
    (tmp_path / bandwidth.CACHE_FILE).write_text("{not json")
    measured, cached = bandwidth.cpu_bandwidth("Test CPU", 1, lambda: 3.0, tmp_path)
    assert (measured.gbs, cached) == (3.0, False)
    assert json.loads((tmp_path / bandwidth.CACHE_FILE).read_text())["Test CPU | 1 threads"]["gbs"] == 3.0


def test_the_triad_measures_something_real():
    assert 0.1 < bandwidth.triad_gbs(array_bytes=8 * 2**20, repeats=2) < 10_000


def test_bench_json_has_a_filled_speed_of_light_share_on_the_cpu(tiny, tmp_path, monkeypatch):
    from lookinside.core.bench.run import device_name

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    (tmp_path / bandwidth.CACHE_FILE).write_text(json.dumps(
        {f"{device_name(torch.device('cpu'))} | 1 threads": {"gbs": 20.0, "array_bytes": 2**28}}))
    monkeypatch.setattr(bandwidth, "triad_gbs", lambda: pytest.fail("the cached number must be used"))
    report = run_bench(tiny, BenchSettings(new_tokens=4, warmup=0, repeat=1, threads=1, modes=("dynamic",),
                                           reference=False))
    light = to_wire(report)["runs"][0]["speed_of_light"]
    assert light["bandwidth"]["gbs"] == 20.0 and light["bandwidth"]["source"].startswith("measured: triad, 1 thread")
    assert 0 < light["share"] == pytest.approx(light["achieved_gbs"] / 20.0)


def _fresh_lm():
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    return load(LoadSpec(model="tiny", device="cpu", threads=1))


# --- OpenMP threads sleep when they wait -----------------------------------------------------------

@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_told(given, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | ({"OMP_WAIT_POLICY": given} if given else {})
    code = "import lookinside, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected


# --- one row at a time in bfloat16 on the CPU ------------------------------------------------------

def test_row_linear_is_linear_for_one_row_and_for_many():
    from lookinside.core.model.kernels import RowLinear

    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 40, bias=True).bfloat16()
    reference = torch.nn.Linear(96, 40, bias=True).bfloat16()
    reference.load_state_dict(layer.state_dict())
    layer.__class__ = RowLinear
    one, many = torch.randn(1, 1, 96).bfloat16(), torch.randn(1, 7, 96).bfloat16()
    with torch.inference_mode():
        assert layer(one).shape == (1, 1, 40)
        torch.testing.assert_close(layer(one).float(), reference(one).float(), rtol=2e-2, atol=2e-2)
        assert torch.equal(layer(many), reference(many))  # the prefill keeps F.linear, bit for bit


def test_matrix_vector_only_for_bfloat16_on_the_cpu(tmp_path):
    from lookinside.core.model.kernels import RowLinear
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    bf16 = load(LoadSpec(model="tiny", device="cpu", dtype="bfloat16", threads=1))
    f32 = _fresh_lm()
    assert all(isinstance(m, RowLinear) for m in bf16.model.modules() if isinstance(m, torch.nn.Linear))
    assert not any(isinstance(m, RowLinear) for m in f32.model.modules())
    prompt = encode_prompt(bf16.tokenizer, "The capital of France is")
    cached = collect(bf16, prompt, GREEDY, GenerationSettings(max_new_tokens=8, ignore_eos=True))
    assert cached.steps[0].text == " Paris"


def test_a_decode_faster_than_the_cached_bandwidth_measures_it_again(tiny, tmp_path, monkeypatch):
    from lookinside.core.bench.run import device_name

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    key = f"{device_name(torch.device('cpu'))} | 1 threads"
    (tmp_path / bandwidth.CACHE_FILE).write_text(json.dumps({key: {"gbs": 1e-6, "array_bytes": 2**28}}))
    monkeypatch.setattr(bandwidth, "triad_gbs", lambda: 5000.0)  # the machine, quiet again
    report = run_bench(tiny, BenchSettings(new_tokens=4, warmup=0, repeat=1, threads=1, modes=("dynamic",),
                                           reference=False))
    light = report.runs[0].speed_of_light
    assert light.bandwidth.gbs == 5000.0 and "measured again" in light.bandwidth.source and light.share < 1
    assert json.loads((tmp_path / bandwidth.CACHE_FILE).read_text())[key]["gbs"] == 5000.0
    assert not report.warnings
