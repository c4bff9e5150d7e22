"""llama.cpp's servers as `--endpoint`: real ids where llama-server gives them and none made up where a server
gives none, a finish reason from the closing chunk, refusals that name the server (even one made inside a
started stream), a bench that fits the server's context and says when no token came back; and the tiny
model's GGUF that llama.cpp serves (scripts/tiny_for_llamacpp.py).

Against tests/fake_llamacpp.py, which answers as llama.cpp's `llama-server` (as its source reads) and
llama-cpp-python 0.3.36 (as its real server answered) do: a 512-token context, the finish reason only in a
closing chunk. llama-cpp-python compiles llama.cpp when it installs, so the real server is not in CI:
scripts/llamacpp_server.sh runs tests/test_remote.py against it where it is installed (docs/remote.md).
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
        assert "ids" in record["unavailable"]  # the ids are lookinside's own numbering of the server's texts
    else:  # llama-server refuses echo: the prompt's ids come from its /tokenize, the top-k's from its answer
        completions = [body for _, path, body in server.requests if path == "/v1/completions"]
        assert completions and not any(body.get("echo") for body in completions)
        assert [t["text"] for t in record["tokens"]] == ["<s>", *texts]
        assert all(isinstance(t["id"], int) and t["id"] > 0 for t in record["tokens"])
        assert all(isinstance(c["id"], int) and c["id"] > 0 for c in record["top"])
        assert "ids" not in record["unavailable"]
        assert "prompt tokens (6): <s>·1" in result.stdout


def test_no_next_token_is_said_not_drawn_from_the_prompts_last_position():
    # llama-cpp-python stops before an end token and sends none: with `echo`, what comes back is the prompt alone,
    # whose last log-probabilities are for the prompt's last token, not for the next one
    with FakeLlamaCpp("llama-cpp-python", eos_first=True) as url:
        result = llm("next-token", PROMPT, "--endpoint", url)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "llama-cpp-python sent no next token for this prompt: the most likely one ends the reply" in result.stderr


def test_the_finish_reason_comes_from_the_closing_chunk(server):
    result = llm("compare", PROMPT, "--endpoint", server.endpoint, "--samples", "1", "--max-new-tokens", "4",
                 "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["greedy"]["finish"] == "length"
    shown = llm("compare", PROMPT, "--endpoint", server.endpoint, "--samples", "1", "--max-new-tokens", "20")
    # no stop string was asked for, so the "stop" of the closing chunk is an end token; the last token is kept
    assert "10 tokens · eos" in shown.stdout and "None" not in shown.stdout and "[stop string]" not in shown.stdout
    assert "light. The" in shown.stdout


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
    probes = [(len(body["prompt"].split(" ")), bool(body.get("stream"))) for method, path, body in server.requests
              if path.endswith("/completions") and body.get("max_tokens") == 1]  # the prefix-cache probes
    too_long = [probe for probe in probes if probe[0] + 1 >= 512]
    assert report["prefix"]["prompt_tokens"] > 128  # long still: most of the context, not a token or two
    if server.flavour == "llama-server":  # it tells its context: nothing is refused, nothing is said
        assert too_long == [] and len(probes) == 4
        assert "context_length" not in report["unavailable"] and "exact_length" not in report["unavailable"]
        assert all(len(row) == 4 for row in report["step_seconds"])  # it takes ignore_eos: the tokens asked for
        return
    # llama-cpp-python does not tell it: the first stream ends empty (its refusal comes inside the 200), the same
    # request unstreamed says why and names the context, and the prompt fitted to it is used once more and kept
    assert [streamed for _, streamed in too_long] == [True, False] and probes[:2] == too_long
    assert len(probes) == 6 and all(size + 1 < 512 * 0.75 for size, _ in probes[2:])
    note = report["unavailable"]["context_length"]
    assert note.startswith("llama-cpp-python does not say its context, and it refused the ")
    assert "(a context of 512 tokens, its refusal said): the prompt was fitted to " in note
    assert "llama-cpp-python cannot be told to ignore end tokens" in report["unavailable"]["exact_length"]
    shown = llm("bench", "--endpoint", server.endpoint, "--repeat", "2", "--new-tokens", "4")
    assert shown.exit_code == 0 and "no context length: llama-cpp-python does not say its context" in \
        " ".join(shown.stdout.split())


def test_a_prompt_over_the_context_is_the_servers_refusal_even_inside_a_started_stream(server):
    result = llm("compare", "word " * 600, "--endpoint", server.endpoint, "--samples", "1")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("error: the server refused the request: ")
    if server.flavour == "llama-cpp-python":
        assert "maximum context length is 512 tokens" in result.stderr and "its stream had ended" in result.stderr


def test_a_stream_that_ends_empty_for_another_reason_stays_an_error():
    with FakeLlamaCpp("llama-cpp-python", empty_streams=True) as url:  # every stream ends empty; unstreamed ones answer
        result = llm("bench", "--endpoint", url, "--repeat", "2", "--new-tokens", "4")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "stopped sending" in result.stderr and "refused" not in result.stderr


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


# ---- the tiny model's GGUF for llama.cpp (scripts/tiny_for_llamacpp.py)


def tiny_for_llamacpp():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "tiny_for_llamacpp.py"
    spec = importlib.util.spec_from_file_location("tiny_for_llamacpp", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tiny_gguf_marks_the_chat_markers_so_llamacpp_reads_them_as_the_model_does(tmp_path):
    """The chat markers are CONTROL tokens, and the name is one llama.cpp reads as Phi-3's: only then does it strip
    the newline after them as tokenizer.json does (`rstrip`), so its template gives the model's own 10 prompt ids
    (measured with llama-cpp-python 0.3.36: 18 ids, and a reply of "1", under another name; docs/remote.md)."""
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    from lookinside.tiny import ASSETS

    script = tiny_for_llamacpp()
    reader = gguf.GGUFReader(script.write_gguf(tmp_path / "tiny.gguf"))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    markers = ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>", "<|endoftext|>", "<s>", "</s>"]
    assert {t: types[tokens.index(t)] for t in markers} == dict.fromkeys(markers, gguf.TokenType.CONTROL)
    assert sum(1 for kind in types if kind == gguf.TokenType.CONTROL) == 8  # those and <unk>, as the converter marks
    assert "phi3" in fields["general.name"].lower()  # llama-vocab.cpp: `_contains_any(model_name, {"phi-3", "phi3"})`
    vocab = json.loads((ASSETS / "tokenizer.json").read_text())["model"]["vocab"]
    assert tokens[:len(vocab)] == sorted(vocab, key=vocab.get) and len(tokens) == 1024  # padded to the embedding
    assert fields["tokenizer.ggml.add_bos_token"] is True and fields["tokenizer.ggml.bos_token_id"] == 1
    assert fields["tokenizer.chat_template"] == (ASSETS / "chat_template.jinja").read_text()
    # the directory for llama.cpp's own converter names the model so too (its naming is gguf's Metadata)
    script.prepare(tmp_path / "tiny-hf")
    assert gguf.Metadata.load(None, tmp_path / "tiny-hf", None).name == "Tiny Phi3"


def test_the_tiny_gguf_is_the_tiny_model(tmp_path):
    """Its weights and vocabulary are the model's: here, the same prompt ids and top-5 next tokens."""
    pytest.importorskip("gguf")
    pytest.importorskip("sentencepiece")
    path = tiny_for_llamacpp().write_gguf(tmp_path / "tiny.gguf")
    ours = json.loads(llm("next-token", PROMPT, "--model", "tiny", "--dtype", "float32", "--json").stdout)
    theirs = json.loads(llm("next-token", PROMPT, "--model", str(path), "--json").stdout)
    assert [t["id"] for t in theirs["tokens"]] == [t["id"] for t in ours["tokens"]]
    assert [c["id"] for c in theirs["top"]] == [c["id"] for c in ours["top"]]
    assert max(abs(a["prob"] - b["prob"]) for a, b in zip(theirs["top"], ours["top"])) < 1e-6
