"""A small OpenAI-compatible server on loopback for the fault tests: it can refuse keys, drop a stream, or stall.

It serves one model, `fake`, and answers chat completions with two streamed tokens carrying
log-probabilities; `mode` picks the fault. Real behaviour of a real server is tested against vLLM
in tests/test_remote.py; this one only makes the failures that a healthy server will not.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _chunk(token: str, logprob: float, finish: str | None = None) -> bytes:
    top = [{"token": token, "logprob": logprob}, {"token": " else", "logprob": logprob - 2.0}]
    data = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "fake",
            "choices": [{"index": 0, "delta": {"content": token},
                         "logprobs": {"content": [{"token": token, "logprob": logprob, "top_logprobs": top}]},
                         "finish_reason": finish}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class FakeServer:
    """`with FakeServer(mode) as url:`; modes: ok, drop (close mid-stream), key (401 without the key),
    nologprobs (tokens without logprobs), stall (never answers a completion), drip (two tokens, then nothing
    until it is closed)."""

    def __init__(self, mode: str = "ok", key: str = "sekret-key-123") -> None:
        self.mode, self.key = mode, key
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _authorised(self) -> bool:
                if server.mode != "key" or self.headers.get("Authorization") == f"Bearer {server.key}":
                    return True
                self._json(401, {"error": {"message": "Unauthorized", "type": "auth", "code": 401}})
                return False

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path.rstrip("/").endswith("/v1/models"):
                    self._json(200, {"object": "list", "data": [
                        {"id": "fake", "object": "model", "created": 0, "owned_by": "fake", "max_model_len": 64}]})
                else:
                    self._json(404, {"error": {"message": "no route", "code": 404}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if not self._authorised():
                    return
                if server.mode == "stall":
                    time.sleep(30)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if server.mode == "nologprobs":
                    data = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
                    self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                self.wfile.write(_chunk("Hello", -0.1))
                self.wfile.flush()
                self.wfile.write(_chunk(" there", -0.2))
                self.wfile.flush()
                if server.mode == "drip":
                    server.closed.wait(120)  # a reply that has started and goes on thinking
                    return
                if server.mode == "drop":
                    time.sleep(0.2)
                    self.connection.shutdown(2)  # the server dies mid-reply: no [DONE], no closing chunk
                    return
                self.wfile.write(_chunk(".", -0.3, "stop"))
                self.wfile.write(b"data: [DONE]\n\n")

        self.closed = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()
