"""Every lookinside view over HTTP: `llm serve` answers each with the command's --json, and clients redraw it.

The server runs in this process (uvicorn on a thread, a real socket on 127.0.0.1) over the
session's tiny model; the commands run through CliRunner with --endpoint, or find the server by
its record as a user's shell would. Each answer must equal the in-process command's JSON.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from lookinside.cli.app import app  # noqa: E402
from lookinside.core.errors import BadInput, RemoteError  # noqa: E402
from lookinside.core.model.spec import LoadSpec  # noqa: E402
from lookinside.serve.settings import ServeSettings  # noqa: E402
from lookinside.views import VIEWS  # noqa: E402

from .test_serve import LiveServer  # noqa: E402
from .wire_checks import untimed  # noqa: E402

PROMPT = "The capital of France is"
runner = CliRunner()
COMMANDS = {
    "next-token": ["next-token", PROMPT, "-k", "5"],
    "compare": ["compare", PROMPT, "--seed", "7", "-n", "8", "-s", "2"],
    "tokens": ["tokens", "Héllo wörld 🙂", "--chat"],
    "forward": ["forward", PROMPT],
    "attention": ["attention", PROMPT, "--layer", "1"],
    "lens": ["lens", PROMPT, "-k", "2", "--all-positions"],
    "ablate": ["ablate", PROMPT, "--head", "1.0", "--head", "2.1"],
    "patch": ["patch", "--clean", PROMPT, "--corrupt", "The capital of Japan is"],
    "steer": ["steer", PROMPT, "--add", " Japan", "--subtract", " France", "-n", "6"],
}


@pytest.fixture(scope="module")
def server(tiny):
    with LiveServer(tiny, ServeSettings(spec=LoadSpec(model="tiny", device="cpu"))) as live:
        yield live


def llm(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"], env={"LOOKINSIDE_API_KEY": "", "OPENAI_API_KEY": ""})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_view_is_served_and_tried_here():
    assert set(COMMANDS) == set(VIEWS) - {"inspect"}  # inspect reads only a config: tested by test_inspect


def same_threads(tiny) -> str:
    """The server's thread count (tiny's, chosen at its load), pinned here too: equal to the last digit needs equal sums."""
    return str(tiny.threads.count)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_view_through_the_server_is_the_commands_json_here(server, tiny, name):
    here = llm(*COMMANDS[name], "--model", "tiny", "--device", "cpu", "--no-server", "--threads", same_threads(tiny))
    assert untimed(llm(*COMMANDS[name], "--endpoint", server.url)) == untimed(here)


def test_the_route_answers_with_the_commands_json_and_the_record(server):
    import urllib.request

    body = json.dumps({"prompt": PROMPT, "top_k": 3}).encode()
    request = urllib.request.Request(server.url.removesuffix("/v1") + "/lookinside/v1/views/next-token", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert set(answer) == {"view", "record"}  # one form on the wire: the record, which is also its --json
    assert answer["view"] == "next-token" and answer["record"]["top"][0]["token"] == " Paris"
    assert answer["record"]["shapes"]["logits"] == [1, 6, 1024] and answer["record"]["top"][0]["id"] == 635


def test_a_bad_request_and_an_unknown_view_are_one_line_4xx(server):
    from lookinside.core.backends.served import connect

    backend = connect(server.url)
    with pytest.raises(BadInput, match="--top-k must be a positive number"):
        backend.next_token(_unchecked(prompt=PROMPT, top_k=0))  # checked again on the server
    result = runner.invoke(app, ["attention", PROMPT, "--layer", "9", "--endpoint", server.url])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--layer must be between 0 and 3" in result.stderr
    import urllib.error
    import urllib.request

    request = urllib.request.Request(server.url.removesuffix("/v1") + "/lookinside/v1/views/nothing", data=b"{}",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 404 and "the views are" in json.loads(refused.value.read())["error"]["message"]


def _unchecked(**fields):
    """A request that skips its own checks, as a client of another version might send it."""
    request = object.__new__(VIEWS["next-token"].request)
    for name, value in {"temperature": None, "chat": False, **fields}.items():
        object.__setattr__(request, name, value)
    return request


def test_li_connect_gives_the_same_results_as_a_model_here(server, tiny):
    import lookinside as li
    from lookinside.core.model.loading import use_threads

    served = li.connect(server.url)
    use_threads(tiny)  # this thread sums as the server's does
    for call in (lambda m: li.next_token(m, PROMPT, top_k=3), lambda m: li.lens(m, PROMPT),
                 lambda m: li.attention(m, PROMPT, layer=2), lambda m: li.forward(m, PROMPT),
                 lambda m: li.tokens(m, PROMPT)):
        assert call(served).to_dict() == call(tiny).to_dict()
    assert "Paris" in served.next_token(VIEWS["next-token"].request(PROMPT)).top[0].token


def test_a_running_server_is_found_by_its_record_and_said_on_the_first_line(server, tiny, tmp_path, monkeypatch):
    from lookinside.serve.registry import ServerRecord, spec_identity, write_record

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LOOKINSIDE_NO_SERVER", raising=False)
    import os

    write_record(ServerRecord(server.url, os.getpid(), "tiny", spec_identity(LoadSpec(model="tiny")), None,
                              server.state.nonce.hex()))
    served = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--layer", "1"])
    here = runner.invoke(app, ["attention", PROMPT, "--model", "tiny", "--layer", "1", "--no-server", "--threads",
                               same_threads(tiny)])
    assert served.exit_code == 0 and served.stderr.startswith("using the server at " + server.url), served.output
    assert served.stdout == here.stdout and "note: using eager attention" not in served.stderr


def test_a_record_whose_server_does_not_answer_is_passed_over_and_the_command_runs_here(tmp_path, monkeypatch):
    import os
    import socket

    from lookinside.serve.registry import ServerRecord, spec_identity, write_record

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    write_record(ServerRecord(f"http://127.0.0.1:{port}/v1", os.getpid(), "tiny",
                              spec_identity(LoadSpec(model="tiny")), None, "ab" * 16))
    result = runner.invoke(app, ["next-token", PROMPT, "--model", "tiny", "-k", "1"])
    assert result.exit_code == 0 and "Paris" in result.stdout and "using the server" not in result.stderr
    with pytest.raises(RemoteError):
        from lookinside.core.backends.served import connect

        connect(f"http://127.0.0.1:{port}/v1")


def test_bench_and_generate_stream_from_the_server(server):
    bench = llm("bench", "--endpoint", server.url, "-n", "6", "--repeat", "1", "--warmup", "0")
    assert bench["decode_tok_s"] > 0 and all(len(row) == 6 for row in bench["step_seconds"])
    assert bench["prefix"]["prompt_tokens"] > 100 and bench["server"] == "lookinside"
    generated = llm("generate", PROMPT, "--endpoint", server.url, "-t", "0", "-n", "4")
    assert generated["run"]["text"].startswith(" Paris") and generated["model"] == "tiny"


def test_a_warm_look_through_the_server_imports_no_torch_transformers_or_openai(server, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from lookinside.serve.registry import ServerRecord, spec_identity, write_record

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LOOKINSIDE_NO_SERVER", raising=False)
    write_record(ServerRecord(server.url, os.getpid(), "tiny", spec_identity(LoadSpec(model="tiny")), None,
                              server.state.nonce.hex()))
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "lookinside", "lens", PROMPT, "--model", "tiny"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "80"}, check=False)
    assert out.returncode == 0 and "␣Paris" in out.stdout, out.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers", "openai", "httpx"}, imported
    assert "using the server at " + server.url in out.stderr


def _heavy(importtime: str) -> set[str]:
    """torch and transformers, where `python -X importtime` says they were imported."""
    return {line.split("|")[-1].strip() for line in importtime.splitlines() if "|" in line} & {"torch", "transformers"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_imports_torch_when_the_server_answers(server, name):
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "lookinside", *COMMANDS[name], "--endpoint",
                          server.url, "--json"], capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "LOOKINSIDE_API_KEY": "", "OPENAI_API_KEY": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert not _heavy(out.stderr)


def test_li_connect_and_every_function_on_it_import_no_torch(server):
    import os
    import subprocess
    import sys

    code = f"""
import lookinside as li
b, p = li.connect({server.url!r}), {PROMPT!r}
for call in (lambda: li.next_token(b, p), lambda: li.compare(b, p, max_new_tokens=3, samples=1),
             lambda: li.tokens(b, p), lambda: li.forward(b, p), lambda: li.attention(b, p), lambda: li.lens(b, p),
             lambda: li.ablate(b, p, heads=["1.0"]), lambda: li.patch(b, p, "The capital of Japan is"),
             lambda: li.steer(b, p, add=" Japan", max_new_tokens=2), lambda: li.generate(b, p, max_new_tokens=2).result(),
             lambda: li.bench(b, repeat=1, new_tokens=2)):
    call().to_dict()
"""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=300,
                         check=False, env={**os.environ, "LOOKINSIDE_API_KEY": "", "OPENAI_API_KEY": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert not _heavy(out.stderr)
