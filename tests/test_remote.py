"""The views against a REAL server serving the tiny model: two independent implementations must agree.

Skipped unless $LOOKINSIDE_TEST_ENDPOINT names the server. `.ci/run` runs `pytest -m remote` against
vLLM (scripts/vllm.sh: its CPU build, float32, --max-logprobs 20, --max-model-len 512), with the
server wanting a key made for the run (LOOKINSIDE_API_KEY here), so a wrong key meets vLLM's own 401,
and against `llm serve --model tiny` (scripts/serve.sh); scripts/llamacpp_server.sh runs it against
llama-cpp-python's server where that is installed (not in CI). vLLM's Phi-3, llama.cpp's and
transformers' are different code: where they agree to 1e-3 on log-probabilities and token for token
on greedy text, all are right. Each test expects of the server what it says it can give (its
`Capabilities` and `ServerKind`): the model's ids where it gives them, the texts where it does not;
exactly N tokens where it can ignore end tokens; vLLM's cap on log-probabilities where there is one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.decoding import compare as local_compare
from lookinside.core.inside import predict
from lookinside.core.request import CompareRequest, GenerationSettings, NextTokenRequest
from lookinside.core.sampling_params import SamplingParams

ENDPOINT = os.environ.get("LOOKINSIDE_TEST_ENDPOINT")
pytestmark = [pytest.mark.remote,
              pytest.mark.skipif(not ENDPOINT, reason="needs a server: LOOKINSIDE_TEST_ENDPOINT=URL")]
PROMPTS = ["The capital of France is", "Write an email to Sarah", "What is the capital of Japan?",
           "Once upon a time", "The capital of Kenya is"]
runner = CliRunner()


@pytest.fixture(scope="module")
def server():
    from lookinside.core.backends.remote import RemoteSpec, api_key_from_env, connect

    return connect(RemoteSpec(ENDPOINT, api_key_from_env()))


@pytest.fixture(scope="module")
def tiny32():
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    return load(LoadSpec(model="tiny", device="cpu", dtype="float32"))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_top5_logprobs_agree_with_ours_to_1e_3(server, tiny32, prompt):
    theirs = server.next_token(NextTokenRequest(prompt, top_k=5))
    ours = predict.next_token(tiny32, NextTokenRequest(prompt, top_k=5))
    if server.capabilities.ids:  # vLLM, llm serve, llama-server: the model's own ids
        assert [c.id for c in theirs.top] == [c.id for c in ours.top]
        assert [t.id for t in theirs.tokens] == [t.id for t in ours.tokens]  # the same prompt tokens
    else:  # llama-cpp-python names tokens by their text, and echoes the prompt without its BOS
        assert [c.token for c in theirs.top] == [c.token for c in ours.top]
        assert [t.text for t in theirs.tokens] == [t.text for t in ours.tokens if t.kind != "special"]
        assert all(t.id < 0 for t in theirs.tokens) and "ids" in theirs.unavailable  # none made up
    worst = max(abs(math.log(a.prob) - math.log(b.prob)) for a, b in zip(theirs.top, ours.top))
    assert worst < 1e-3, worst


def test_greedy_continuations_agree_token_for_token(server, tiny32):
    request = CompareRequest("The capital of France is", SamplingParams(seed=1), GenerationSettings(max_new_tokens=24),
                             samples=1)
    theirs, ours = local_compare.compare(server, request).greedy, local_compare.compare(tiny32, request).greedy
    steps = ours.steps
    if ours.finish == "eos" and not server.kind.streams_end_token:  # llama.cpp does not send the end token
        steps = steps[:-1]
    assert [s.text for s in theirs.steps] == [s.text for s in steps] and theirs.text.startswith(" Paris")
    assert theirs.finish == ours.finish and theirs.text == ours.text
    assert len(theirs.steps) == len(steps) and all(abs(a.logprob - b.logprob) < 1e-3
                                                   for a, b in zip(theirs.steps, steps))


def test_a_seeded_remote_sample_repeats(server):
    request = CompareRequest("Once upon a time", SamplingParams(temperature=1.2, seed=1234),
                             GenerationSettings(max_new_tokens=24), samples=2)
    first, again = local_compare.compare(server, request), local_compare.compare(server, request)
    assert [run.text for run in first.samples] == [run.text for run in again.samples]
    assert first.seeds == [1234, 1235]
    # and the seed is used, not ignored: the two seeds sample different replies (" 3 + 0 = 3" greedy,
    # " 2 + + = 5" and " 1 1 0 0 ..." at seeds 1234 and 1235 on vLLM 0.32.0 CPU)
    assert first.samples[0].text != first.samples[1].text


def served_by_lookinside() -> bool:
    """True when the endpoint is `llm serve`, which answers every view itself (shapes, logits and ids included)."""
    from lookinside.core.backends.remote import api_key_from_env
    from lookinside.core.backends.served import probe

    return probe(ENDPOINT, api_key_from_env()) is not None


def test_next_token_json_says_what_a_server_cannot_give():
    result = runner.invoke(app, ["next-token", "The capital of France is", "--endpoint", ENDPOINT, "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["top"][0]["token"] == " Paris"
    if served_by_lookinside():  # the whole view, from the server
        assert data["top"][0]["logit"] > 10 and data["shapes"]["logits"] == [1, 6, 1024] and data["unavailable"] == {}
    else:
        assert data["top"][0]["logit"] is None and data["shapes"] is None
        assert "shapes" in data["unavailable"] and "logit" in data["unavailable"]


def test_chat_streams_a_reply_and_compare_draws_the_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    chat = runner.invoke(app, ["chat", "What is the capital of Japan?", "--endpoint", ENDPOINT, "-t", "0"])
    assert chat.exit_code == 0 and "Tokyo" in chat.stdout, chat.output
    compared = runner.invoke(app, ["compare", "The capital of France is", "--endpoint", ENDPOINT, "--seed", "5",
                                   "-n", "12", "--json"])
    data = json.loads(compared.stdout)
    assert data["greedy"]["text"].startswith(" Paris") and data["seeds"] == [5, 6, 7]
    if served_by_lookinside():  # compare runs on the server: the model's own ids
        assert data["greedy"]["token_ids"][0] == 635 and data["unavailable"] == {}
    else:  # the ids are lookinside's own, and the record says so
        assert "token_ids" in data["unavailable"] and "prompt_ids" in data["unavailable"]


def test_generate_streams_the_same_greedy_text_as_here(tiny32):
    result = runner.invoke(app, ["generate", "The capital of France is", "--endpoint", ENDPOINT, "-t", "0", "-n", "8",
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    here = local_compare.compare(tiny32, CompareRequest("The capital of France is", settings=GenerationSettings(
        max_new_tokens=8), samples=1)).greedy
    assert data["run"]["text"] == here.text and "token_ids" in data["unavailable"]
    assert [data["pieces"][str(i)] for i in data["run"]["token_ids"]][:1] == [" Paris"]
    plain = runner.invoke(app, ["generate", "The capital of France is", "--endpoint", ENDPOINT, "-t", "0", "-n", "8"])
    assert plain.exit_code == 0 and plain.stdout == here.text + "\n", plain.output


def test_bench_times_the_stream_and_the_prefix_cache(server):
    # the bench prompt: tiny ends its reply at once (an end token first), so where the server cannot be told to
    # ignore end tokens, a prompt the model goes on from (" 3 + 0 = 3", 10 tokens)
    prompt = [] if server.capabilities.ignore_eos else ["--prompt", "Once upon a time"]
    result = runner.invoke(app, ["bench", "--endpoint", ENDPOINT, "-n", "16", "--repeat", "2", "--json", *prompt])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ttft_s"]["median"] > 0 and data["decode_tok_s"] > 0 and data["itl_p50_s"] <= data["itl_p90_s"]
    if server.capabilities.ignore_eos:
        assert all(len(row) == 16 for row in data["step_seconds"])  # vLLM ignores end tokens when told
    else:
        assert all(2 <= len(row) <= 16 for row in data["step_seconds"]) and "exact_length" in data["unavailable"]
    assert data["prefix"]["prompt_tokens"] > 200 and "kv_cache_switch" in data["unavailable"]
    assert data["prefix"]["prompt_tokens"] < 512 * 0.8  # fitted to the 512-token context
    if server.context_length is None:  # llama-cpp-python: refused a longer prompt, said its context; the bench says so
        assert "(a context of 512 tokens, its refusal said): the prompt was fitted to" in \
            data["unavailable"]["context_length"]
    else:
        assert "context_length" not in data["unavailable"]


def test_over_max_logprobs_and_over_the_context_are_one_line(server):
    many = runner.invoke(app, ["next-token", "hi", "--endpoint", ENDPOINT, "-k", "25"])
    if served_by_lookinside() or server.kind.max_logprobs is None:  # the whole distribution, or no cap known
        assert many.exit_code == 0 and "Top 25 next tokens" in many.stdout, many.output
    else:
        assert many.exit_code == 2 and "more than vLLM returns by default (20)" in many.stderr
    # llama-cpp-python refuses it inside a started stream; asked again unstreamed, it says why
    long = runner.invoke(app, ["compare", "word " * 600, "--endpoint", ENDPOINT])
    assert long.exit_code == 2 and long.stderr.count("\n") == 1 and "the server refused the request" in long.stderr


def test_wrong_model_name_lists_the_served_ones():
    result = runner.invoke(app, ["next-token", "hi", "--endpoint", ENDPOINT, "--model", "phi-9"])
    assert result.exit_code == 2 and "it serves: tiny" in result.stderr


def test_an_endpoint_command_never_imports_torch():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "lookinside", "next-token", "hi", "--endpoint",
                          ENDPOINT, "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported


@pytest.mark.skipif(not os.environ.get("LOOKINSIDE_API_KEY"), reason="the server was started without an API key")
def test_a_wrong_or_missing_key_is_the_servers_own_401_in_one_line(monkeypatch):
    wrong = "sk-wrong-0123456789abcdef"
    result = runner.invoke(app, ["next-token", "hi", "--endpoint", ENDPOINT, "--api-key", wrong])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "refused the API key (401)" in result.stderr and wrong not in result.output
    monkeypatch.delenv("LOOKINSIDE_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    missing = runner.invoke(app, ["next-token", "hi", "--endpoint", ENDPOINT])
    assert missing.exit_code == 1 and "refused the API key (401)" in missing.stderr
