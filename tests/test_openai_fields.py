"""Every field of vLLM's request types is honoured or refused by name; real clients' bodies are answered.

The field lists below are vLLM's `CompletionRequest` and `ChatCompletionRequest`
(vllm/entrypoints/openai/protocol.py, vLLM 0.10, commit 0052bed36509c7a5a2d8e48265334e40cf2f5a0e), written
out here so that a field the server does not know fails this test instead of being dropped.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient

from lookinside.core.decoding.generate import collect
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import GenerationSettings
from lookinside.core.sampling_params import SamplingParams
from lookinside.serve import openai_api as oa
from lookinside.serve.app import create_app
from lookinside.serve.settings import ServeSettings

VLLM_COMPLETION_FIELDS = [
    "model", "prompt", "prompt_embeds", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
    "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature",
    "top_p", "user", "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens",
    "truncate_prompt_tokens", "allowed_token_ids", "prompt_logprobs", "add_special_tokens", "response_format",
    "guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
    "guided_whitespace_pattern", "priority", "request_id", "logits_processors", "return_tokens_as_token_ids",
    "cache_salt", "kv_transfer_params", "vllm_xargs",
]
VLLM_CHAT_FIELDS = [
    "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream", "stream_options",
    "temperature", "top_p", "tools", "tool_choice", "reasoning_effort", "include_reasoning", "parallel_tool_calls",
    "user", "best_of", "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens",
    "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids", "bad_words", "echo", "add_generation_prompt",
    "continue_final_message", "add_special_tokens", "documents", "chat_template", "chat_template_kwargs",
    "mm_processor_kwargs", "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structural_tag",
    "guided_decoding_backend", "guided_whitespace_pattern", "priority", "request_id", "logits_processors",
    "return_tokens_as_token_ids", "cache_salt", "kv_transfer_params", "vllm_xargs",
]
# A value for each field that neither OpenAI's default nor a no-op: the server must act on it or refuse it.
ODD = {"prompt_embeds": "AAAA", "frequency_penalty": 0.5, "presence_penalty": 0.5, "logit_bias": {"5": 10},
       "suffix": "!", "use_beam_search": True, "length_penalty": 2.0, "truncate_prompt_tokens": 3,
       "allowed_token_ids": [5], "spaces_between_special_tokens": False, "add_special_tokens": "flip",
       "response_format": {"type": "json_object"}, "guided_json": {"type": "object"}, "guided_regex": "a+",
       "guided_choice": ["a"], "guided_grammar": "root ::= a", "guided_decoding_backend": "outlines",
       "guided_whitespace_pattern": " ", "priority": 1, "logits_processors": ["x.y"], "kv_transfer_params": {"a": 1},
       "vllm_xargs": {"a": 1}, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required",
       "reasoning_effort": "high", "bad_words": ["Paris"], "echo": True, "add_generation_prompt": False,
       "continue_final_message": True, "documents": [{"title": "t", "text": "x"}], "chat_template": "{{ 1 }}",
       "chat_template_kwargs": {"a": 1}, "mm_processor_kwargs": {"a": 1}, "structural_tag": "{}"}
BASE = {"completion": {"model": "tiny", "prompt": "The capital of France is", "max_tokens": 2, "temperature": 0},
        "chat": {"model": "tiny", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                 "max_tokens": 2, "temperature": 0}}
PATH = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}


@pytest.fixture(scope="module")
def client(tiny):
    with TestClient(create_app(tiny, ServeSettings(spec=LoadSpec(model="tiny", device="cpu")))) as c:
        yield c


def post(client, endpoint, **fields):
    return client.post(PATH[endpoint], json={**BASE[endpoint], **fields})


@pytest.mark.parametrize(("endpoint", "fields"), [("completion", VLLM_COMPLETION_FIELDS), ("chat", VLLM_CHAT_FIELDS)])
def test_every_vllm_field_is_honoured_or_refused_by_name(client, endpoint, fields):
    assert set(fields) <= oa.HONOURED[endpoint] | set(oa.NEUTRAL[endpoint])  # none unknown to the server
    assert not oa.HONOURED[endpoint] & set(oa.NEUTRAL[endpoint])
    for name in fields:
        if name in oa.HONOURED[endpoint]:
            continue
        allowed = oa.NEUTRAL[endpoint][name]
        for value in allowed:
            if value is not oa._ANY:
                assert post(client, endpoint, **{name: value}).status_code == 200, (name, value)
        if oa._ANY in allowed:
            assert post(client, endpoint, **{name: "anything"}).status_code == 200, name
            continue
        response = post(client, endpoint, **{name: ODD[name]})
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert error["param"] == name and name in error["message"]


def test_a_field_vllm_does_not_have_is_refused_by_name(client):
    response = post(client, "completion", temperture=0.5)  # a typo must not pass as the default
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperture"


def test_the_harmless_defaults_are_accepted(client):
    assert post(client, "chat", response_format={"type": "text"}, tools=[], logprobs=False).status_code == 200
    assert post(client, "completion", suffix="", logprobs=None, frequency_penalty=0, logit_bias={}).status_code == 200


def test_include_stop_str_in_output_and_stop_reason_as_vllm_fills_them(client):
    cut = post(client, "completion", max_tokens=8, stop=["."]).json()["choices"][0]
    kept = post(client, "completion", max_tokens=8, stop=["."], include_stop_str_in_output=True).json()["choices"][0]
    plain = post(client, "completion", max_tokens=8).json()["choices"][0]
    assert (cut["text"], cut["finish_reason"], cut["stop_reason"]) == (" Paris", "stop", ".")
    assert (kept["text"], kept["stop_reason"]) == (" Paris.", ".")
    assert plain["finish_reason"] == "stop" and plain["stop_reason"] is None  # the end token: null, as vLLM
    length = post(client, "completion", max_tokens=1).json()["choices"][0]
    assert (length["finish_reason"], length["stop_reason"]) == ("length", None)


def test_stop_token_ids_end_the_reply_with_that_id_as_stop_reason(client, tiny):
    paris = encode_prompt(tiny.tokenizer, "The capital of France is Paris")[-1]
    choice = post(client, "completion", max_tokens=8, stop_token_ids=[paris]).json()["choices"][0]
    assert (choice["text"], choice["finish_reason"], choice["stop_reason"]) == ("", "stop", paris)


def test_min_tokens_keeps_the_end_token_back(client):
    short = post(client, "completion", max_tokens=12, return_tokens_as_token_ids=True, logprobs=0).json()
    longer = post(client, "completion", max_tokens=12, min_tokens=6, logprobs=0).json()
    assert short["usage"]["completion_tokens"] < 6 <= longer["usage"]["completion_tokens"]
    assert post(client, "completion", max_tokens=2, min_tokens=3).status_code == 400


def test_skip_special_tokens_decides_whether_an_end_token_is_in_the_text(client):
    shown = post(client, "completion", max_tokens=6, ignore_eos=True, skip_special_tokens=False).json()
    hidden = post(client, "completion", max_tokens=6, ignore_eos=True).json()
    assert "<|endoftext|>" in shown["choices"][0]["text"] and "<|endoftext|>" not in hidden["choices"][0]["text"]


def test_prompt_logprobs_as_vllm_gives_them(client, tiny):
    choice = post(client, "completion", max_tokens=1, prompt_logprobs=2).json()["choices"][0]
    ids = encode_prompt(tiny.tokenizer, "The capital of France is")
    logprobs = choice["prompt_logprobs"]
    assert logprobs[0] is None and len(logprobs) == len(ids)
    echoed = post(client, "completion", max_tokens=0, echo=True, logprobs=2).json()["choices"][0]["logprobs"]
    for i, token_id in enumerate(ids[1:], start=1):
        entry = logprobs[i][str(token_id)]
        assert abs(entry["logprob"] - echoed["token_logprobs"][i]) < 1e-6 and entry["rank"] >= 1
        assert {e["rank"] for e in logprobs[i].values()} >= {1, 2}
    chat = post(client, "chat", prompt_logprobs=1).json()
    assert chat["prompt_logprobs"][0] is None and len(chat["prompt_logprobs"]) > 5
    assert post(client, "completion", prompt_logprobs=1, stream=True).status_code == 400


def test_several_prompts_n_and_best_of_are_indexed_as_openai_does(client, tiny):
    prompts = ["The capital of France is", "The capital of Japan is"]
    body = {"prompt": prompts, "n": 2, "temperature": 0.8, "seed": 7, "max_tokens": 5, "logprobs": 0,
            "return_tokens_as_token_ids": True}
    choices = post(client, "completion", **body).json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    settings = GenerationSettings(max_new_tokens=5)
    for c in choices:
        prompt, j = divmod(c["index"], 2)
        alone = collect(tiny, encode_prompt(tiny.tokenizer, prompts[prompt]),
                        SamplingParams(temperature=0.8, seed=7 + j), settings)
        assert c["logprobs"]["tokens"] == [f"token_id:{i}" for i in alone.token_ids]
    best = post(client, "completion", prompt=prompts[0], n=1, best_of=4, temperature=1.5, seed=3, max_tokens=6,
                logprobs=0).json()["choices"]
    runs = [collect(tiny, encode_prompt(tiny.tokenizer, prompts[0]), SamplingParams(temperature=1.5, seed=3 + j),
                    GenerationSettings(max_new_tokens=6)) for j in range(4)]
    top = max(runs, key=lambda r: sum(s.logprob for s in r.steps))
    assert len(best) == 1 and math.isclose(sum(best[0]["logprobs"]["token_logprobs"]),
                                           sum(s.logprob for s in top.steps), abs_tol=1e-4)
    assert post(client, "completion", n=2, best_of=1).status_code == 400
    assert post(client, "completion", n=1, best_of=2, stream=True).status_code == 400
    streamed = client.post(PATH["completion"], json={**BASE["completion"], "prompt": prompts, "n": 2, "stream": True})
    indexes = {line for line in streamed.text.splitlines() if line.startswith("data: {")}
    assert all(f'"index":{i}' in "".join(indexes) for i in range(4))
    chat = post(client, "chat", n=3, temperature=1.0, seed=1).json()["choices"]
    assert [c["index"] for c in chat] == [0, 1, 2]


def test_what_langchain_openai_batch_sends(client):
    """langchain_openai.OpenAI(...).batch([...]): BaseOpenAI._default_params, prompts in one request (batch_size 20)."""
    body = {"prompt": ["The capital of France is", "The capital of Japan is", "Hello"], "model": "tiny",
            "temperature": 0.7, "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0, "n": 1, "logit_bias": {},
            "seed": None, "logprobs": None, "max_tokens": 256}
    response = client.post(PATH["completion"], json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2] and all(c["text"] for c in data["choices"])
    assert data["usage"]["completion_tokens"] > 0


def test_what_lm_eval_local_completions_sends(client, tiny):
    """lm_eval --model local-completions --batch_size 4: LocalCompletionsAPI._create_payload, token ids."""
    texts = ["The capital of France is Paris", "The capital of France is Rome", "2 + 2 = 4", "Once upon a time"]
    ids = [encode_prompt(tiny.tokenizer, t) for t in texts]
    loglikelihood = {"model": "tiny", "prompt": ids, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234,
                     "echo": True}
    data = client.post(PATH["completion"], json=loglikelihood).json()
    choices = sorted(data["choices"], key=lambda c: c["index"])
    assert len(choices) == 4
    for prompt, choice in zip(ids, choices):
        logprobs = choice["logprobs"]
        assert len(logprobs["token_logprobs"]) == len(prompt) + 1  # the prompt echoed, and one new token
        assert logprobs["token_logprobs"][0] is None and all(isinstance(x, float) for x in logprobs["token_logprobs"][1:])
        assert all(len(top) >= 1 for top in logprobs["top_logprobs"][1:])
    paris, rome = (sum(c["logprobs"]["token_logprobs"][6:-1]) for c in choices[:2])
    assert paris > rome  # " Paris" is the likelier continuation
    generate = {"prompt": texts[:2], "model": "tiny", "max_tokens": 8, "temperature": 0, "stop": ["\n\n"],
                "seed": 1234}
    out = client.post(PATH["completion"], json=generate)
    assert out.status_code == 200 and len(out.json()["choices"]) == 2
