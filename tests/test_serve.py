"""`llm serve`: the OpenAI-compatible API over the tiny model, its limits, its key, its queue and its record.

Most tests run the app in this process (starlette's TestClient, or uvicorn on a thread for a real
socket), over the session's tiny model. The `slow` ones start a real `llm serve --model tiny`
process on 127.0.0.1 and a free port, wait for /health (never a fixed sleep), and signal it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx2")

from starlette.testclient import TestClient

from lookinside.cli.app import app as cli_app
from lookinside.core.decoding.generate import collect
from lookinside.core.decoding.prompting import encode_messages
from lookinside.core.errors import BadInput
from lookinside.core.inside import predict
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import GenerationSettings, NextTokenRequest
from lookinside.core.sampling_params import SamplingParams
from lookinside.serve import registry
from lookinside.serve.app import create_app
from lookinside.serve.settings import ServeSettings

PROMPT = "The capital of France is"
SPEC = LoadSpec(model="tiny", device="cpu")
runner = CliRunner()


@pytest.fixture(scope="module")
def client(tiny):
    with TestClient(create_app(tiny, ServeSettings(spec=SPEC))) as c:
        yield c


def complete(client, **body):
    response = client.post("/v1/completions", json={"model": "tiny", **body})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]


def sse(lines):
    """The JSON events of a server-sent stream, up to [DONE] (which must come)."""
    events = []
    for line in lines:
        if not line:
            continue
        assert line.startswith("data: "), line
        if line == "data: [DONE]":
            return events
        events.append(json.loads(line.removeprefix("data: ")))
    raise AssertionError("the stream ended without [DONE]")


# ---- the API's answers equal the in-process views'


def test_models_health_and_info(client, tiny):
    card = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["owned_by"], m["max_model_len"]) for m in card] == [("tiny", "lookinside", 512)]
    assert client.get("/health").status_code == 200
    info = client.get("/lookinside/v1/info").json()
    assert info["lookinside"] is True and info["model"] == "tiny" and info["dtype"] == "float32"
    assert info["parameters"] == sum(p.numel() for p in tiny.model.parameters()) and info["context_length"] == 512
    assert info["spec"]["model"] == "tiny" and info["spec"]["device"] == "cpu"


def test_next_token_logprobs_equal_the_in_process_view_to_1e_5(client, tiny):
    choice = complete(client, prompt=PROMPT, max_tokens=1, logprobs=5, echo=True, temperature=0,
                      return_tokens_as_token_ids=True)
    ours = predict.next_token(tiny, NextTokenRequest(PROMPT, top_k=5))
    tokens, tops = choice["logprobs"]["tokens"], choice["logprobs"]["top_logprobs"]
    assert [int(t.removeprefix("token_id:")) for t in tokens[:-1]] == [p.id for p in ours.tokens]
    served = sorted(tops[-1].items(), key=lambda kv: -kv[1])[:5]
    assert [int(t.removeprefix("token_id:")) for t, _ in served] == [c.id for c in ours.top]
    worst = max(abs(lp - math.log(c.prob)) for (_, lp), c in zip(served, ours.top))
    assert worst < 1e-5, worst
    assert choice["logprobs"]["token_logprobs"][0] is None and tops[0] is None  # vLLM's echo: the first is null
    assert choice["text"] == PROMPT + " Paris"


def test_echoed_prompt_logprobs_match_the_next_token_of_each_prefix(client, tiny):
    ids = list(tiny.tokenizer(PROMPT).input_ids)
    echoed = complete(client, prompt=ids, max_tokens=0, echo=True, logprobs=3, return_tokens_as_token_ids=True)
    for k in (2, 4):
        step = complete(client, prompt=ids[:k], max_tokens=1, logprobs=3, temperature=0,
                        return_tokens_as_token_ids=True)
        theirs = echoed["logprobs"]["top_logprobs"][k]
        best = sorted(step["logprobs"]["top_logprobs"][0].items(), key=lambda kv: -kv[1])[:3]
        assert all(abs(theirs[t] - lp) < 1e-5 for t, lp in best)
        chosen = f"token_id:{ids[k]}"
        reference = predict.next_token(tiny, NextTokenRequest(tiny.tokenizer.decode(ids[1:k]), top_k=50))
        if any(c.id == ids[k] for c in reference.top):  # the prefix re-encodes to the same ids
            prob = next(c.prob for c in reference.top if c.id == ids[k])
            assert abs(echoed["logprobs"]["token_logprobs"][k] - math.log(prob)) < 1e-5
        assert chosen in theirs


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.0), SamplingParams(temperature=0.9, top_k=40, seed=7)])
def test_generated_tokens_equal_the_one_token_loop(client, tiny, params):
    body = {"temperature": params.temperature, "top_k": params.top_k, "seed": params.seed}
    choice = complete(client, prompt="Once upon a time", max_tokens=12, logprobs=5,
                      **{k: v for k, v in body.items() if v is not None})
    ids = list(tiny.tokenizer("Once upon a time").input_ids)
    run = collect(tiny, ids, params, GenerationSettings(max_new_tokens=12))
    assert choice["text"] == run.text
    served = choice["logprobs"]["token_logprobs"]
    assert len(served) == len(run.steps) and all(abs(a - b.logprob) < 1e-5 for a, b in zip(served, run.steps))
    assert choice["finish_reason"] == {"eos": "stop", "stop": "stop", "length": "length"}[run.finish]


def test_chat_goes_through_the_template_with_top_logprobs(client, tiny):
    messages = [{"role": "user", "content": "What is the capital of Japan?"}]
    response = client.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 10,
                                                         "temperature": 0, "logprobs": True, "top_logprobs": 3})
    choice = response.json()["choices"][0]
    run = collect(tiny, encode_messages(tiny.tokenizer, messages), SamplingParams(temperature=0.0),
                  GenerationSettings(max_new_tokens=10))
    assert choice["message"]["content"] == run.text and "Tokyo" in run.text
    content = choice["logprobs"]["content"]
    assert all(abs(c["logprob"] - s.logprob) < 1e-5 and len(c["top_logprobs"]) == 3 for c, s in zip(content, run.steps))


def test_streams_carry_the_same_text_and_end_with_done(client):
    whole = complete(client, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2)
    with client.stream("POST", "/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                                                        "logprobs": 2, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response.iter_lines())
    assert "".join(e["choices"][0]["text"] for e in events) == whole["text"]
    assert events[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
    assert [e["choices"][0]["logprobs"]["token_logprobs"][0] for e in events] == whole["logprobs"]["token_logprobs"]
    with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "What is the capital of Japan?"}], "max_tokens": 10,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as response:
        chunks = sse(response.iter_lines())
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[-1]["usage"]["completion_tokens"] > 0
    assert "Tokyo" in "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def test_a_stop_string_cuts_the_text(client):
    free = complete(client, prompt=PROMPT, max_tokens=6, temperature=0)["text"]
    assert free.startswith(" Paris")
    stopped = complete(client, prompt=PROMPT, max_tokens=6, temperature=0, stop=["ris"])
    assert stopped["text"] == " Pa" and stopped["finish_reason"] == "stop"


# ---- every malformed request: a 4xx with one line of OpenAI's error object


BAD = [
    (b"{", 400), (b"[1, 2]", 400), (b'"text"', 400),
    ({}, 400), ({"prompt": 3}, 400), ({"prompt": ""}, 400), ({"prompt": [[1], []]}, 400),
    ({"prompt": "hi", "max_tokens": 0}, 400), ({"prompt": "hi", "max_tokens": "5"}, 400),
    ({"prompt": "hi", "max_tokens": 10**9}, 400), ({"prompt": "hi", "logprobs": 21}, 400),
    ({"prompt": "hi", "temperature": -1}, 400), ({"prompt": "hi", "temperature": "hot"}, 400),
    ({"prompt": "hi", "top_p": 2}, 400), ({"prompt": "hi", "seed": -1}, 400), ({"prompt": "hi", "n": 0}, 400),
    ({"prompt": "hi", "stop": [1]}, 400), ({"prompt": "hi", "stream": "yes"}, 400),
    ({"prompt": [1, 10**9]}, 400), ({"prompt": "word " * 600}, 400), ({"prompt": "hi", "model": "phi-9"}, 404),
    ({"prompt": "x" * 2_000_000}, 413),
]
BAD_CHAT = [
    ({"messages": []}, 400), ({"messages": "hi"}, 400), ({"messages": [{"role": "robot", "content": "hi"}]}, 400),
    ({"messages": [{"role": "user", "content": 3}]}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 30}, 400),
]


@pytest.mark.parametrize(("path", "body", "status"), [("/v1/completions", b, s) for b, s in BAD] +
                         [("/v1/chat/completions", b, s) for b, s in BAD_CHAT])
def test_a_malformed_request_is_a_4xx_in_one_line(client, path, body, status):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and "\n" not in error["message"] and error["type"] and error["code"] == status
    assert "Traceback" not in response.text


def test_unknown_routes_and_methods_are_json_too(client):
    for response, status in ((client.get("/v2/nothing"), 404), (client.get("/v1/completions"), 405)):
        assert response.status_code == status and response.json()["error"]["code"] == status


# ---- the key, the host


def test_a_missing_or_wrong_key_is_401_and_the_key_never_comes_back(tiny):
    key = "s3cret-key-0123456789"
    with TestClient(create_app(tiny, ServeSettings(spec=SPEC, api_key=key))) as c:
        assert c.get("/health").status_code == 200  # open, so a script can wait for the server
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            response = c.get("/v1/models", headers=headers)
            assert response.status_code == 401 and key not in response.text
        good = c.post("/v1/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"prompt": PROMPT, "max_tokens": 1, "temperature": 0})
        assert good.status_code == 200 and key not in good.text


def test_a_non_loopback_host_needs_a_key():
    with pytest.raises(BadInput, match="--api-key"):
        ServeSettings(host="0.0.0.0")
    assert ServeSettings(host="0.0.0.0", api_key="k").url == "http://127.0.0.1:8765/v1"
    assert ServeSettings(host="::1").url.startswith("http://[::1]:")
    result = runner.invoke(cli_app, ["serve", "--model", "tiny", "--host", "0.0.0.0"], env={"LOOKINSIDE_SERVE_KEY": ""})
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--api-key" in result.stderr


def test_a_port_in_use_is_one_line_before_anything_loads(monkeypatch):
    from lookinside.core.model import loading

    monkeypatch.setattr(loading, "load", lambda spec: pytest.fail("loaded a model for a port it cannot use"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = runner.invoke(cli_app, ["serve", "--model", "tiny", "--port", str(port)])
    finally:
        taken.close()
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


def test_serve_help_lists_the_model_and_server_options():
    result = runner.invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "120"})
    for flag in ("--model", "--dtype", "--quantize", "--threads", "--trust-remote-code", "--host", "--port",
                 "--api-key", "--queue", "--max-tokens", "--max-logprobs", "--max-body"):
        assert flag in result.stdout, flag


# ---- one model, one queue


def test_a_full_queue_is_503_with_retry_after(tiny):
    with TestClient(create_app(tiny, ServeSettings(spec=SPEC, queue=1))) as c:
        worker = c.app.state.lookinside.worker
        release = threading.Event()
        running = threading.Event()
        worker.submit(lambda: (running.set(), release.wait(60)))  # the model's thread is busy
        assert running.wait(30)
        waiting = worker.submit(lambda: "done")  # the one place in the queue is taken
        try:
            response = c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1})
            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
            assert "busy" in response.json()["error"]["message"]
        finally:
            release.set()
        assert waiting.result(timeout=30) == "done"
        assert c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1}).status_code == 200


def test_an_added_route_runs_its_job_on_the_model_thread_and_a_bug_is_one_line(tiny):
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from lookinside.serve.app import run_on_model, state_of

    async def where(request):
        state = state_of(request)
        name, vocab = await run_on_model(state, lambda: (threading.current_thread().name, state.lm.tokenizer.vocab_size))
        return JSONResponse({"thread": name, "vocab": vocab})

    async def broken(request):
        await run_on_model(state_of(request), lambda: 1 / 0)

    routes = [Route("/lookinside/v1/where", where), Route("/lookinside/v1/broken", broken)]
    app = create_app(tiny, ServeSettings(spec=SPEC), extra_routes=routes)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/lookinside/v1/where").json() == {"thread": "lookinside-model", "vocab": tiny.tokenizer.vocab_size}
        response = c.get("/lookinside/v1/broken")
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    assert "ZeroDivisionError" in response.json()["error"]["message"] and "Traceback" not in response.text


class LiveServer:
    """The app under uvicorn on a thread, on 127.0.0.1 and a free port: real sockets, the session's model."""

    def __init__(self, lm, settings):
        import uvicorn

        self.app = create_app(lm, settings)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for_health(self.url, None)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    @property
    def state(self):
        return self.app.state.lookinside


def wait_for_health(url, process, timeout_s=180):
    """Poll /health until it answers 200 (the server may be loading on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer /health within {timeout_s} s")


@pytest.fixture(scope="module")
def live(tiny):
    with LiveServer(tiny, ServeSettings(spec=SPEC)) as server:
        yield server


def test_the_openai_client_gets_the_in_process_top5(live, tiny):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=live.url, api_key="none", max_retries=0)
    out = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=1, logprobs=5, echo=True, temperature=0)
    top = sorted(out.choices[0].logprobs.top_logprobs[-1].items(), key=lambda kv: -kv[1])[:5]
    ours = predict.next_token(tiny, NextTokenRequest(PROMPT, top_k=5))
    assert [t for t, _ in top] == [c.token for c in ours.top] and top[0][0] == " Paris"
    assert max(abs(lp - math.log(c.prob)) for (_, lp), c in zip(top, ours.top)) < 1e-5
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "What is the capital of "
                                          "Japan?"}], max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
    assert "Tokyo" in chat.choices[0].message.content and len(chat.choices[0].logprobs.content[0].top_logprobs) == 2
    streamed = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed).startswith(" Paris")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=1, logprobs=21)


def test_the_remote_backend_and_endpoint_command_work_against_it(live, tiny):
    pytest.importorskip("openai")
    from lookinside.core.backends.remote import RemoteSpec, connect

    theirs = connect(RemoteSpec(live.url)).next_token(NextTokenRequest(PROMPT, top_k=5))
    ours = predict.next_token(tiny, NextTokenRequest(PROMPT, top_k=5))
    assert [c.id for c in theirs.top] == [c.id for c in ours.top]  # the model's ids, as from vLLM
    assert [t.id for t in theirs.tokens] == [t.id for t in ours.tokens]
    assert max(abs(math.log(a.prob) - math.log(b.prob)) for a, b in zip(theirs.top, ours.top)) < 1e-5
    result = runner.invoke(cli_app, ["next-token", PROMPT, "--endpoint", live.url, "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["top"][0]["token"] == " Paris"


def test_a_vanished_client_stops_its_generation(live):
    before = live.state.tokens_generated
    body = {"prompt": "Once", "max_tokens": 500, "ignore_eos": True, "temperature": 1.0, "seed": 1, "stream": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", live.url + "/completions", json=body) as response:
        lines = response.iter_lines()
        got = [line for line, _ in zip(lines, range(6)) if line.startswith("data: ")]
        assert len(got) >= 3
    # the client is gone: the worker must go idle long before 500 tokens
    deadline = time.monotonic() + 60
    while live.state.worker.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    made = live.state.tokens_generated - before
    assert not live.state.worker.busy and made < 500, made
    after = httpx.post(live.url + "/completions", json={"prompt": PROMPT, "max_tokens": 2, "temperature": 0}, timeout=60)
    assert after.json()["choices"][0]["text"].startswith(" Paris")


def test_a_vanished_client_stops_a_reply_that_is_not_streamed_too(live):
    before = live.state.tokens_generated
    body = {"prompt": "Once", "max_tokens": 500, "ignore_eos": True, "temperature": 1.0, "seed": 2}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.3 s and closes the connection
        httpx.post(live.url + "/completions", json=body, timeout=httpx.Timeout(60, read=0.3))
    deadline = time.monotonic() + 60
    while live.state.worker.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    made = live.state.tokens_generated - before
    assert not live.state.worker.busy and 0 < made < 500, made


# ---- the record, and the commands that find it


def test_find_server_matches_the_spec_and_drops_stale_records(live, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LOOKINSIDE_NO_SERVER", raising=False)
    nonce = live.state.nonce.hex()  # the server proves it knows it before the key is sent (test_serve_security.py)
    path = registry.write_record(registry.ServerRecord(live.url, os.getpid(), "tiny", registry.spec_identity(SPEC), "k",
                                                       nonce))
    assert path.stat().st_mode & 0o777 == 0o600
    assert registry.find_server(LoadSpec(model="tiny", device="cpu", threads=3))[0].url == live.url  # threads do not matter
    assert registry.find_server(LoadSpec(model="tiny", device="cpu", dtype="bfloat16"))[0] is None
    monkeypatch.setenv("LOOKINSIDE_NO_SERVER", "1")
    assert registry.find_server(SPEC)[0] is None
    monkeypatch.delenv("LOOKINSIDE_NO_SERVER")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = registry.write_record(registry.ServerRecord(live.url, dead.pid, "tiny", registry.spec_identity(SPEC),
                                                        None, nonce))
    (tmp_path / "servers" / "1.json").write_text("{not json")
    (tmp_path / "servers" / "1.json").chmod(0o600)
    found = registry.running_servers()
    assert [r.pid for _, r in found.records] == [os.getpid()] and len(found.notes) == 1
    assert not stale.exists() and not (tmp_path / "servers" / "1.json").exists() and path.exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nothing = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    registry.write_record(registry.ServerRecord(nothing, os.getpid(), "tiny", registry.spec_identity(SPEC), None, nonce))
    assert registry.find_server(SPEC)[0] is None  # a live pid that does not listen is not a server


def test_the_client_path_imports_no_torch_and_no_openai_when_no_server_runs(tmp_path):
    code = ("from lookinside.cli.backends import _running_server; from lookinside.core.model.spec import LoadSpec; "
            "assert _running_server(LoadSpec(model='tiny')) is None")
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LOOKINSIDE_DATA_DIR": str(tmp_path)}, check=False)
    assert out.returncode == 0, out.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers", "openai", "starlette", "uvicorn", "httpx2", "httpx"}


# ---- a real `llm serve` process


def start_server(tmp_path: Path, *args: str, key: str | None = None) -> tuple[subprocess.Popen, str]:
    """`llm serve --model tiny --port 0 ARGS` in its own data directory; its process and URL once /health answers."""
    env = {**os.environ, "LOOKINSIDE_DATA_DIR": str(tmp_path), "LOOKINSIDE_SERVE_KEY": key or ""}
    env.pop("LOOKINSIDE_NO_SERVER", None)
    process = subprocess.Popen([sys.executable, "-m", "lookinside", "serve", "--model", "tiny", "--port", "0", *args],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((tmp_path / "servers").glob("*.json")) and time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"llm serve exited with {process.returncode}: {process.stderr.read()}")
        time.sleep(0.1)
    url = json.loads(next((tmp_path / "servers").glob("*.json")).read_text())["url"]
    wait_for_health(url, process)
    return process, url


def stop_server(process: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return process.returncode, err


@pytest.mark.slow
def test_a_real_server_with_a_key_records_itself_and_exits_0_on_sigterm(tmp_path):
    pytest.importorskip("openai")
    import openai

    key = "serve-test-key-42"
    process, url = start_server(tmp_path, key=key)
    try:
        record = next((tmp_path / "servers").glob("*.json"))
        assert record.stat().st_mode & 0o777 == 0o600 and json.loads(record.read_text())["pid"] == process.pid
        good = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        out = good.completions.create(model="tiny", prompt=PROMPT, max_tokens=1, logprobs=5, temperature=0)
        assert out.choices[0].text == " Paris"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
        missing = httpx.get(url + "/models", timeout=60)
        assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
        # a command with the same model options uses it, and says so in one line; --no-server runs here
        env = {**os.environ, "LOOKINSIDE_DATA_DIR": str(tmp_path)}
        env.pop("LOOKINSIDE_NO_SERVER", None)
        via = subprocess.run([sys.executable, "-m", "lookinside", "next-token", PROMPT, "--model", "tiny", "-k", "3",
                              "--json"], capture_output=True, text=True, env=env, timeout=180, check=False)
        assert via.returncode == 0, via.stderr
        assert f"using the server at {url} (llm serve, pid {process.pid})" in via.stderr
        assert json.loads(via.stdout)["top"][0]["token"] == " Paris"
        here = subprocess.run([sys.executable, "-m", "lookinside", "next-token", PROMPT, "--model", "tiny", "-k", "3",
                               "--json", "--no-server"], capture_output=True, text=True, env=env, timeout=180,
                              check=False)
        assert here.returncode == 0 and "using the server" not in here.stderr
        assert json.loads(here.stdout)["shapes"] is not None
    finally:
        code, err = stop_server(process)
    assert code == 0, err
    assert key not in err and "Traceback" not in err
    assert not list((tmp_path / "servers").glob("*.json"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_stream_finishes_or_cuts_the_reply_and_exits_0(tmp_path, sig):
    process, url = start_server(tmp_path)
    body = {"prompt": "Once", "max_tokens": 500, "ignore_eos": True, "seed": 1, "stream": True}
    lines: list[str] = []
    try:
        with httpx.Client(timeout=120) as http, http.stream("POST", url + "/completions", json=body) as response:
            for line in response.iter_lines():
                lines.append(line)
                if len(lines) == 4:
                    process.send_signal(sig)
    except httpx.HTTPError:
        pass  # the server may close the connection when it cuts the reply
    code, err = stop_server(process)
    assert code == 0, err
    assert "Traceback" not in err and len(lines) >= 4
    assert not list((tmp_path / "servers").glob("*.json"))
