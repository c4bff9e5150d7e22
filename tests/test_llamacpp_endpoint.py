"""llama.cpp's servers as `--endpoint`: real ids where llama-server gives them and none made up where a server
gives none, a finish reason from the closing chunk, refusals that name the server, a bench that fits the
server's context and says when no token came back.

Against tests/fake_llamacpp.py, which answers as llama.cpp's `llama-server` (as its source reads) and
llama-cpp-python do: a 512-token context, the finish reason only in a closing chunk; a real llama.cpp
server compiles for about an hour here, so it is for a manual run (docs/remote.md).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.backends.remote import RemoteSpec, connect
from lookinside.core.backends.server_kind import LLAMA_CPP, LLAMA_CPP_PYTHON, UNKNOWN, VLLM, detect

from .fake_llamacpp import FakeLlamaCpp
from .fake_openai import FakeServer

pytest.importorskip("openai")
runner = CliRunner()
PROMPT = "The capital of France is"


def llm(*args: str):
    return runner.invoke(app, list(args), env={"LOOKINSIDE_API_KEY": "", "OPENAI_API_KEY": "", "COLUMNS": "80"})


@pytest.fixture(params=["llama-server", "llama-cpp-python"])
def server(request):
    fake = FakeLlamaCpp(request.param)
    with fake as url:
        fake.endpoint = url
        yield fake


def test_the_kind_is_read_from_the_servers_answers(server):
    backend = connect(RemoteSpec(server.endpoint))
    expected = LLAMA_CPP if server.flavour == "llama-server" else LLAMA_CPP_PYTHON
    assert backend.kind.name == expected and not backend.kind.is_vllm
    # llama-server tells its context only through /props; llama-cpp-python does not tell it at all
    assert backend.context_length == (512 if server.flavour == "llama-server" else None)


def test_owned_by_alone_does_not_make_a_server_vllm():
    with FakeServer() as url:  # owned_by "fake", max_model_len 64, no /props, no /api/version, no /version
        assert detect(url, {"id": "fake", "owned_by": "fake", "max_model_len": 64}).name == UNKNOWN
        assert detect(url, {"id": "fake", "owned_by": "vllm"}).name == VLLM  # the owner, and nothing says otherwise
    with FakeLlamaCpp("llama-cpp-python") as url:  # a llama-cpp-python that called itself vllm is still not vLLM
        assert detect(url, {"id": "x", "owned_by": "me", "permissions": []}).name == LLAMA_CPP_PYTHON


def test_next_token_draws_no_made_up_ids(server):
    result = llm("next-token", PROMPT, "--endpoint", server.endpoint, "--top-k", "3")
    assert result.exit_code == 0, result.output
    assert "·-" not in result.stdout  # no interned ids drawn as if they were the model's
    record = json.loads(llm("next-token", PROMPT, "--endpoint", server.endpoint, "--top-k", "3", "--json").stdout)
    assert record["top"][0]["token"] == " Paris"
    texts = ["The", " capital", " of", " France", " is"]
    if server.flavour == "llama-cpp-python":  # it echoes the prompt: the server's own tokens, shown as its text
        assert "prompt tokens (5): The  ␣capital  ␣of  ␣France  ␣is" in result.stdout
        assert [t["text"] for t in record["tokens"]] == texts
        assert all(t["id"] is None for t in record["tokens"]) and [c["id"] for c in record["top"]] == [None] * 3
    else:  # llama-server refuses echo: the prompt's ids come from its /tokenize, the top-k's from its answer
        completions = [body for _, path, body in server.requests if path == "/v1/completions"]
        assert completions and not any(body.get("echo") for body in completions)
        assert [t["text"] for t in record["tokens"]] == ["<s>", *texts]
        assert all(isinstance(t["id"], int) and t["id"] > 0 for t in record["tokens"])
        assert all(isinstance(c["id"], int) and c["id"] > 0 for c in record["top"])
        assert "unavailable" not in record or "ids" not in record["unavailable"]
        assert "prompt tokens (6): <s>·1" in result.stdout


def test_the_finish_reason_comes_from_the_closing_chunk(server):
    result = llm("compare", PROMPT, "--endpoint", server.endpoint, "--samples", "1", "--max-new-tokens", "4",
                 "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["greedy"]["finish"] == "length"
    shown = llm("compare", PROMPT, "--endpoint", server.endpoint, "--samples", "1", "--max-new-tokens", "20")
    assert "10 tokens · stop" in shown.stdout and "None" not in shown.stdout


def test_extra_sampling_fields_go_by_the_servers_names_or_are_refused_naming_it(server):
    result = llm("compare", PROMPT, "--endpoint", server.endpoint, "--ignore-eos", "--repetition-penalty", "1.1",
                 "--samples", "1", "--max-new-tokens", "12", "--json")
    if server.flavour == "llama-cpp-python":
        assert result.exit_code == 2
        assert "need a server that takes" in result.stderr and "(this one is llama-cpp-python)" in result.stderr
        assert "this one is me" not in result.stderr
        return
    assert result.exit_code == 0, result.output  # llama-server takes them, under its own names
    streamed = [body for _, path, body in server.requests if body.get("stream")]
    assert streamed and all(body["ignore_eos"] is True and body["repeat_penalty"] == 1.1 for body in streamed)
    assert not any("repetition_penalty" in body for body in streamed)
    assert json.loads(result.stdout)["greedy"]["finish"] == "length"  # past the end the model would have stopped at


def test_bench_fits_the_long_prompt_into_the_servers_context(server):
    result = llm("bench", "--endpoint", server.endpoint, "--repeat", "2", "--new-tokens", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    sent = [len(body["prompt"].split(" ")) + body["max_tokens"] for method, path, body in server.requests
            if path.endswith("/completions") and body.get("max_tokens") == 1]  # the prefix-cache probes
    refused = [size for size in sent if size > 512]
    # llama-server tells its context: nothing is refused; llama-cpp-python refuses the first try only, then the
    # shrunk prompt is kept for every later probe
    assert len(refused) == (0 if server.flavour == "llama-server" else 1) and len(sent) - len(refused) >= 4
    assert report["prefix_cache"]["prompt_tokens"] > 128  # long still: most of the context, not a token or two
    if server.flavour == "llama-cpp-python":  # it does not tell its context: the prompt shrank, and it says so
        assert "was shrunk to" in report["unavailable"]["full_long_prompt"]
        assert "llama-cpp-python cannot be told to ignore end tokens" in report["unavailable"]["exact_length"]
    else:  # llama-server tells its context, and takes ignore_eos: every stream has the tokens asked for
        assert "full_long_prompt" not in report["unavailable"] and "exact_length" not in report["unavailable"]
        assert all(len(row) == 4 for row in report["step_seconds"])


def test_bench_says_plainly_when_no_token_came_back():
    with FakeLlamaCpp("llama-cpp-python", eos_first=True) as url:
        result = llm("bench", "--endpoint", url, "--repeat", "2", "--new-tokens", "4")
    assert result.exit_code == 0, result.output
    assert "no tokens: no token came back: the server ended every reply before its first token" in \
        " ".join(result.stdout.split())


def test_chat_streams_the_whole_reply(server):
    result = llm("chat", "What is the capital of France?", "--endpoint", server.endpoint)
    assert result.exit_code == 0, result.output
    assert "Paris. It is a city of light. The" in result.stdout  # the last token too, held for its finish reason
