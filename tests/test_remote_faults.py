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
    assert "nothing answers at http://127.0.0.1" in one_error_line(result) and result.seconds < 10


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
    assert "did not answer within 1 s" in one_error_line(result) and result.seconds < 10


def test_a_server_gone_mid_reply_keeps_the_partial_reply_marked_as_cut(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    with FakeServer("drop") as url:
        result = llm("chat", "hi", "--endpoint", url)
    assert "Hello there" in result.stdout and "stopped sending before the reply ended" in result.output
    (saved,) = (tmp_path / "chats").glob("session-*.json")
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


def test_generate_streams_from_a_server_with_the_ids_left_out():
    with FakeServer("ok") as url:
        text = llm("generate", "hi", "--chat", "--endpoint", url, "--api-key", "sekret-key-123")
        assert text.exit_code == 0 and text.stdout.strip(), text.output
        data = llm("generate", "hi", "--chat", "--endpoint", url, "--api-key", "sekret-key-123", "--json")
    payload = __import__("json").loads(data.stdout)
    assert payload["text"] == text.stdout.rstrip("\n") and payload["token_ids"] is None
    assert payload["steps"][0]["token"] and payload["steps"][0]["token_id"] is None
