"""CUDA checks: what only a GPU can show. Skipped without one; scripts/gpu_check.sh runs them."""

from __future__ import annotations

import pytest
import torch

from lookinside.core.decoding.generate import collect
from lookinside.core.decoding.timing import peak_memory_bytes, reset_peak_memory
from lookinside.core.model.loading import load
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import GenerationSettings, NextTokenRequest
from lookinside.core.sampling_params import SamplingParams

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def tiny_cuda():
    return load(LoadSpec(model="tiny", device="cuda"))


def test_auto_dtype_is_bfloat16_from_ampere_and_float16_before(tiny_cuda):
    major, _ = torch.cuda.get_device_capability()
    assert tiny_cuda.dtype == (torch.bfloat16 if major >= 8 else torch.float16)
    assert next(tiny_cuda.model.parameters()).device.type == "cuda"


def test_the_tiny_model_says_paris_on_the_gpu(tiny_cuda):
    from lookinside.core.inside.predict import next_token

    assert next_token(tiny_cuda, NextTokenRequest("The capital of France is")).top[0].token == "▁Paris"


def test_float32_on_the_gpu_generates_what_the_cpu_generates(tiny):
    gpu = load(LoadSpec(model="tiny", device="cuda", dtype="float32"))
    ids = tiny.tokenizer("The capital of Japan is")["input_ids"]
    config = GenerationSettings(max_new_tokens=12)
    assert collect(gpu, ids, GREEDY, config).token_ids == collect(tiny, ids, GREEDY, config).token_ids


def test_cache_on_and_off_agree_and_peak_memory_is_read(tiny_cuda):
    ids = tiny_cuda.tokenizer("The capital of Japan is")["input_ids"]
    reset_peak_memory(tiny_cuda.device)
    cached = collect(tiny_cuda, ids, GREEDY, GenerationSettings(max_new_tokens=16, cache="dynamic"))
    assert peak_memory_bytes(tiny_cuda.device) > 0
    uncached = collect(tiny_cuda, ids, GREEDY, GenerationSettings(max_new_tokens=16, cache="none"))
    static = collect(tiny_cuda, ids, GREEDY, GenerationSettings(max_new_tokens=16, cache="static"))
    assert cached.token_ids == uncached.token_ids == static.token_ids


def test_sdpa_and_eager_agree_on_the_gpu():
    from lookinside.core.inside.predict import next_token

    sdpa = next_token(load(LoadSpec(model="tiny", device="cuda", dtype="float32")), NextTokenRequest("The capital of France is"))
    eager = next_token(load(LoadSpec(model="tiny", device="cuda", dtype="float32", attn="eager")), NextTokenRequest("The capital of France is"))
    assert [c.id for c in sdpa.top[:3]] == [c.id for c in eager.top[:3]]
    assert abs(sdpa.top[0].prob - eager.top[0].prob) < 1e-4
