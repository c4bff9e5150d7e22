"""--endpoint's faults, each one line and a non-zero exit within seconds, against servers that misbehave on purpose.

A healthy server is tested for real in tests/test_remote.py (vLLM); these need only the `openai`
client, so they run in every suite.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app

from .fake_openai import FakeServer

pytest.importorskip("openai")
runner = CliRunner()


def llm(*args: str, env: dict[str, str] | None = None):
    started = time.perf_counter()
    result = runner.invoke(app, list(args), env={"LOOKINSIDE_API_KEY": "", "OPENAI_API_KEY": "", **(env or {})})
    result.seconds = time.perf_counter() - started
    return result


def one_error_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening():
    result = llm("next-token", "hi", "--endpoint", f"http://127.0.0.1:{closed_port()}/v1")
    assert "nothing answers at http://127.0.0.1" in one_error_line(result) and result.seconds < 45


def test_a_server_that_is_not_openai_compatible():
    class Plain(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = llm("next-token", "hi", "--endpoint", f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
    assert "not as an OpenAI-compatible server does" in one_error_line(result)


def test_a_401_names_the_flag_and_never_the_key():
    with FakeServer("key") as url:
        wrong = llm("chat", "hi", "--endpoint", url, "--api-key", "wrong-key-456")
        right = llm("chat", "hi", "--endpoint", url, env={"OPENAI_API_KEY": "sekret-key-123"})
    line = one_error_line(wrong)
    assert "refused the API key (401)" in line and "wrong-key-456" not in wrong.output
    assert right.exit_code == 0 and "Hello there." in right.stdout and "sekret" not in right.output


def test_a_model_the_server_does_not_serve():
    with FakeServer() as url:
        line = one_error_line(llm("chat", "hi", "--endpoint", url, "--model", "gpt-9"))
    assert line == "error: the server does not serve 'gpt-9'; it serves: fake"


def test_a_server_without_logprobs():
    with FakeServer("nologprobs") as url:
        line = one_error_line(llm("chat", "hi", "--endpoint", url))
    assert "without log-probabilities" in line


def test_a_timeout_is_one_line_within_seconds():
    with FakeServer("stall") as url:
        result = llm("chat", "hi", "--endpoint", url, env={"LOOKINSIDE_TIMEOUT": "1"})
    assert "did not answer within 1 s" in one_error_line(result) and result.seconds < 45  # not the default 60 s


def test_a_server_gone_mid_reply_keeps_the_partial_reply_marked_as_cut(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    with FakeServer("drop") as url:
        result = llm("chat", "hi", "--endpoint", url)
    assert "Hello there" in result.stdout and "stopped sending before the reply ended" in result.output
    assert result.exit_code == 1  # a cut reply is kept, but a script must not take it for a whole one
    (saved,) = (tmp_path / "chats").glob("asked-*.json")
    messages = json.loads(saved.read_text())["messages"]
    assert messages[0] == {"role": "user", "content": "hi"}
    assert {k: v for k, v in messages[1].items() if k != "tokens"} == {"role": "assistant", "content": "Hello there",
                                                                       "cut": True}


def test_flags_that_need_the_model_here_are_refused_with_an_endpoint():
    with FakeServer() as url:
        line = one_error_line(llm("bench", "--endpoint", url, "--no-cache"))
    assert "--cache/--no-cache need the model here" in line


def test_an_endpoint_that_is_not_a_url():
    assert "must be an http:// or https:// URL" in one_error_line(llm("next-token", "hi", "--endpoint", "localhost:8000"))


@pytest.mark.parametrize(("command", "what"), [("forward", "the shapes inside a forward pass"),
                                               ("attention", "attention weights"),
                                               ("lens", "each layer's residual stream")])
def test_views_of_the_insides_say_a_server_cannot_show_them(command, what):
    with FakeServer() as url:  # a server that only generates
        line = one_error_line(llm(command, "hi", "--endpoint", url, "--api-key", "sekret-key-123"))
    assert f"an OpenAI-compatible server does not show {what}" in line


# ---- round two (issue 21): servers that drip, lie about shapes, or send numbers that are not numbers ----

class Scripted:
    """A server on 127.0.0.1 whose /v1/models body and completion stream are given as bytes.

    `drip` sends the stream one byte per `drip` seconds (a server that is alive but useless).
    """

    def __init__(self, models: bytes, stream: bytes = b"", drip: float = 0.0, drip_models: bool = False) -> None:
        self.closed = threading.Event()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: bytes, kind: str, slow: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                if not slow:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(len(body)) if slow else ():
                    if scripted.closed.wait(drip):
                        return
                    try:
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                if not slow:
                    self.wfile.write(body)

            def do_GET(self):
                self._send(models, "application/json", drip_models)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(stream, "text/event-stream", drip > 0 and not drip_models)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()


MODELS = b'{"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake", "max_model_len": 64}]}'


def sse(*tokens: tuple[str, object], finish: str | None = "stop", done: bool = True) -> bytes:
    import json

    out = b""
    for i, (token, logprob) in enumerate(tokens):
        last = i == len(tokens) - 1
        item = {"token": token, "logprob": logprob, "top_logprobs": [{"token": token, "logprob": logprob}]}
        data = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                "choices": [{"index": 0, "delta": {"content": token}, "logprobs": {"content": [item]},
                             "finish_reason": finish if last else None}]}
        out += b"data: " + json.dumps(data).encode() + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def test_a_server_that_drips_one_byte_a_second_times_out_as_lookinside_timeout_says():
    with Scripted(MODELS, sse(("Hello", -0.1), (" there", -0.2)), drip=1.0) as url:
        result = llm("chat", "hi", "--endpoint", url, env={"LOOKINSIDE_TIMEOUT": "3"})
    assert result.exit_code != 0 and result.seconds < 45, (result.seconds, result.output)  # never, without a deadline
    assert "3 s" in result.output and "LOOKINSIDE_TIMEOUT" in result.output and "Traceback" not in result.output


def test_a_models_list_that_drips_times_out_as_a_whole():
    with Scripted(MODELS, drip=1.0, drip_models=True) as url:
        result = llm("next-token", "hi", "--endpoint", url, env={"LOOKINSIDE_TIMEOUT": "2"})
    line = one_error_line(result)
    assert "did not answer within 2 s" in line and result.seconds < 45


@pytest.mark.parametrize("value", ["abc", "inf", "-1", "0", "nan", "1e999"])
def test_a_bad_lookinside_timeout_is_one_line(value):
    line = one_error_line(llm("next-token", "hi", "--endpoint", "http://127.0.0.1:9/v1",
                              env={"LOOKINSIDE_TIMEOUT": value}))
    assert "LOOKINSIDE_TIMEOUT must be a positive number of seconds" in line and repr(value) in line


@pytest.mark.parametrize(("endpoint", "message"), [
    ("http://[::1", "is not a valid URL"),
    ("http://[::1]:port/v1", "is not a valid URL"),
    ("http:///v1", "names no host"),
    ("ftp://127.0.0.1/v1", "must be an http:// or https:// URL"),
])
def test_a_malformed_endpoint_is_one_line(endpoint, message):
    assert message in one_error_line(llm("next-token", "hi", "--endpoint", endpoint))


def test_a_stream_that_ends_without_a_finish_reason_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    with Scripted(MODELS, sse(("Hello", -0.1), (" there", -0.2), finish=None)) as url:
        chat = llm("chat", "hi", "--endpoint", url)
        compare = llm("compare", "hi", "--chat", "--endpoint", url, "-n", "4")
    assert chat.exit_code == 1 and "Hello there" in chat.stdout and "stopped sending" in chat.output
    assert "stopped sending" in one_error_line(compare)


@pytest.mark.parametrize("body", [
    b'{"object": "list", "data": "fake"}',
    b'{"object": "list", "data": [{"name": "fake"}]}',
    b'{"object": "list", "data": [17]}',
    b'[{"id": "fake"}]',
    b'{"object": "list", "data": null}',
    b'"models"',
])
def test_a_models_list_of_an_unexpected_shape_is_one_line(body):
    with Scripted(body) as url:
        line = one_error_line(llm("next-token", "hi", "--endpoint", url))
    assert url in line and "OpenAI-compatible" in line


def test_a_context_length_that_is_not_a_number_is_unknown_not_a_crash():
    models = b'{"object": "list", "data": [{"id": "fake", "owned_by": "x", "max_model_len": "lots"}]}'
    with Scripted(models, sse(("Hello", -0.1), (".", -0.2))) as url:
        result = llm("chat", "hi", "--endpoint", url)
    assert result.exit_code == 0 and "Hello." in result.stdout


@pytest.mark.parametrize("logprob", ["NaN", "Infinity", "5.0", '"high"'])
def test_a_servers_impossible_log_probability_is_refused_before_it_is_drawn(logprob):
    stream = sse(("Hello", -0.1), (" there", -0.2)).replace(b'"logprob": -0.2', b'"logprob": ' + logprob.encode())
    with Scripted(MODELS, stream) as url:
        result = llm("compare", "hi", "--chat", "--endpoint", url, "-n", "4")
    line = one_error_line(result)
    assert "log-probability" in line and "there" in line
    assert "148" not in result.stdout and "nan" not in result.stdout.lower()


def test_a_rounding_error_above_zero_is_read_as_certain():
    with Scripted(MODELS, sse(("Hello", 1e-7), (".", -0.2))) as url:
        result = llm("chat", "hi", "--endpoint", url)
    assert result.exit_code == 0 and "Hello." in result.stdout


def test_generate_streams_from_a_server_with_the_ids_left_out():
    with FakeServer("ok") as url:
        text = llm("generate", "hi", "--chat", "--endpoint", url, "--api-key", "sekret-key-123")
        assert text.exit_code == 0 and text.stdout.strip(), text.output
        data = llm("generate", "hi", "--chat", "--endpoint", url, "--api-key", "sekret-key-123", "--json")
    payload = __import__("json").loads(data.stdout)
    run = payload["run"]
    assert run["text"] == text.stdout.rstrip("\n") and set(payload["unavailable"]) == {"token_ids", "prompt_ids"}
    assert payload["pieces"][str(run["steps"][0]["token_id"])]  # the ids are lookinside's: their texts come along


def test_continue_is_refused_by_a_chat_server_from_its_capabilities():
    from lookinside.core.backends.served import connect
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.session import ChatSession
    from lookinside.core.errors import BadInput

    with FakeServer() as url:
        backend = connect(url, "sekret-key-123")
        conversation = Conversation()
        conversation.add("user", "hi")
        conversation.add("assistant", "Hello", cut=True)
        assert not backend.capabilities.continue_reply
        with pytest.raises(BadInput, match="/continue needs the model here"):
            ChatSession(backend, conversation).begin(continuation=True)
