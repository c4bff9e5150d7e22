"""A loopback server that answers like llama.cpp's OpenAI-compatible servers, for the endpoint tests.

Two flavours, as the two servers answer (llama-server as its source, tools/server, reads):
- `llama-server`: llama.cpp's own C++ server. /v1/models says `owned_by: llamacpp` with a `meta`
  block holding the context (`n_ctx`), GET /props gives it again, responses carry `Server:
  llama.cpp`; /v1/completions refuses `echo` ("Only no echo is supported", a 500) and gives
  log-probabilities in the chat format, with the ids of the returned tokens; POST /tokenize gives a
  prompt's ids and pieces; `top_k`, `min_p`, `repeat_penalty` and `ignore_eos` are taken.
- `llama-cpp-python`: its Python server. /v1/models says `owned_by: me` with an empty `permissions`
  list, there is no /props (its context is not told), `echo` sends the prompt's tokens back, and
  log-probabilities come in OpenAI's completion format: texts only, no ids.
Both give no finish reason on a token's chunk (only in a closing chunk without a token). A prompt that
does not fit the context: llama-server refuses it (with `max_tokens`) with a 400; llama-cpp-python checks
the prompt alone (with its BOS), with a 400 that names its context when not streaming, but in a stream only
after the 200 has started, and then ends the stream without an event (as llama-cpp-python 0.3.36 does: a 200,
then the closing chunk at once).

The "model" splits a prompt at spaces (a token per word) and answers " Paris. It is" and so on;
`eos_first` makes it end every reply before its first token, as a model that emits an end token
at once does (the servers do not stream the end token); `empty_streams` ends every stream so, after its
200, as a server that fails for another reason than the context would.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = [" Paris", ".", " It", " is", " a", " city", " of", " light", ".", " The"]
ALTERNATIVES = {" Paris": [" Lyon", " the"], ".": [",", "!"]}


def words(text: str) -> list[str]:
    """The fake tokenizer: a token per word, each but the first with its leading space."""
    parts = text.split(" ")
    return [parts[0], *(" " + p for p in parts[1:])] if parts[0] else [" " + p for p in parts[1:]]


def top_for(token: str, logprob: float) -> dict[str, float]:
    others = ALTERNATIVES.get(token, [" and", " or"])
    return {token: logprob, others[0]: logprob - 2.0, others[1]: logprob - 3.0}


VOCAB: dict[str, int] = {"<s>": 1}


def token_id(text: str) -> int:
    """The fake vocabulary: ids handed out in order of first sight, stable for the process."""
    return VOCAB.setdefault(text, len(VOCAB) + 100)


def content_item(token: str, logprob: float) -> dict[str, Any]:
    """One token in llama-server's (and the chat API's) log-probability format, with ids."""
    return {"id": token_id(token), "token": token, "bytes": list(token.encode()), "logprob": logprob,
            "top_logprobs": [{"id": token_id(t), "token": t, "bytes": list(t.encode()), "logprob": lp}
                             for t, lp in top_for(token, logprob).items()]}


class QuietServer(ThreadingHTTPServer):
    """A client closing a kept-alive connection is not an error worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class FakeLlamaCpp:
    """`with FakeLlamaCpp("llama-server", n_ctx=512) as url:`; `requests` records every (method, path, body)."""

    def __init__(self, flavour: str = "llama-server", n_ctx: int = 512, eos_first: bool = False,
                 empty_streams: bool = False) -> None:
        assert flavour in ("llama-server", "llama-cpp-python")
        self.flavour, self.n_ctx, self.eos_first, self.empty_streams = flavour, n_ctx, eos_first, empty_streams
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                if server.flavour == "llama-server":
                    self.send_header("Server", "llama.cpp")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _json(self, status: int, body: Any) -> None:
                self._send(status, json.dumps(body).encode())

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path, {}))
                if self.path == "/v1/models" and server.flavour == "llama-server":
                    entry = server.model_entry()
                    self._json(200, {"models": [{"name": entry["id"], "model": entry["id"]}], "object": "list",
                                     "data": [entry]})
                elif self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [server.model_entry()]})
                elif self.path == "/props" and server.flavour == "llama-server":
                    self._json(200, {"default_generation_settings": {"n_ctx": server.n_ctx, "params": {}},
                                     "total_slots": 1, "model_path": "/models/tiny-q8_0.gguf", "build_info": "b6000"})
                elif server.flavour == "llama-server":
                    self._json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})
                else:
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                server.requests.append(("POST", self.path, body))
                if self.path == "/tokenize" and server.flavour == "llama-server":
                    pieces = (["<s>"] if body.get("add_special") else []) + words(body.get("content", ""))
                    self._json(200, {"tokens": [{"id": token_id(p), "piece": p} for p in pieces]
                                     if body.get("with_pieces") else [token_id(p) for p in pieces]})
                    return
                if self.path == "/extras/tokenize" and server.flavour == "llama-cpp-python":
                    self._json(200, {"tokens": [token_id(p) for p in words(body.get("input", ""))]})
                    return
                if not self.path.endswith("completions"):
                    self._json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})
                    return
                if body.get("echo") and server.flavour == "llama-server":
                    self._json(500, {"error": {"code": 500, "message": "Only no echo is supported",
                                               "type": "server_error"}})
                    return
                chat = self.path.endswith("/chat/completions")
                prompt = " ".join(m["content"] for m in body["messages"]) if chat else body.get("prompt", "")
                if server.flavour == "llama-cpp-python" and len(words(prompt)) + 1 >= server.n_ctx:  # with its BOS
                    if body.get("stream"):  # checked inside the started stream: a 200, then nothing
                        self._empty_stream()
                    else:  # its error handler words ValueError("Requested tokens (N) exceed ...") as OpenAI does
                        prompt_tokens, completion = len(words(prompt)) + 1, body.get("max_tokens")
                        self._json(400, {"error": {"message": (
                            f"This model's maximum context length is {server.n_ctx} tokens, however you requested "
                            f"{prompt_tokens + (completion or 0)} tokens ({prompt_tokens} in your prompt; {completion} "
                            "for the completion). Please reduce your prompt; or completion length."),
                            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
                    return
                if server.flavour == "llama-server" and len(words(prompt)) + int(body.get("max_tokens") or 16) \
                        > server.n_ctx:
                    self._json(400, {"error": {"message": "the request exceeds the available context size, try "
                                               "increasing it", "type": "invalid_request_error", "code": 400}})
                    return
                wanted = int(body.get("max_tokens") or 16)
                reply = (REPLY * 8)[:wanted] if body.get("ignore_eos") else [] if server.eos_first else REPLY[:wanted]
                finish = "length" if len(reply) == int(body.get("max_tokens") or 16) else "stop"
                if body.get("stream") and server.empty_streams:  # a server that fails for no reason it says
                    self._empty_stream()
                elif body.get("stream"):
                    self._stream(chat, reply, finish)
                elif chat:
                    self._json(200, server.chat_answer(reply, finish, body))
                else:
                    self._json(200, server.completion_answer(prompt, reply, finish, body))

            def _stream(self, chat: bool, reply: list[str], finish: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i, token in enumerate(reply):  # a token's chunk never says why the reply ends
                    self._event(server.chunk(chat, token, -0.1 * (i + 1), None))
                self._event(server.chunk(chat, None, 0.0, finish))  # the closing chunk: no token, the reason
                self._event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")

            def _empty_stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"0\r\n\r\n")  # the body ends at once: no event, no [DONE], no reason

            def _event(self, data: Any) -> None:
                payload = b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def model_entry(self) -> dict[str, Any]:
        if self.flavour == "llama-server":
            return {"id": "tiny-q8_0.gguf", "aliases": [], "tags": [], "object": "model", "created": 0,
                    "owned_by": "llamacpp", "meta": {"vocab_type": 1, "n_vocab": 1024, "n_ctx": self.n_ctx,
                                                     "n_ctx_train": 512, "n_embd": 128}}
        return {"id": "tiny-q8_0.gguf", "object": "model", "owned_by": "me", "permissions": []}

    def completion_answer(self, prompt: str, reply: list[str], finish: str, body: dict[str, Any]) -> dict[str, Any]:
        tokens = reply[:1] if reply else []
        echoed = words(prompt) if body.get("echo") else []
        logprobs = None
        if body.get("logprobs") is not None and self.flavour == "llama-server":
            logprobs = {"content": [content_item(t, -0.1) for t in tokens]}
        elif body.get("logprobs") is not None:
            all_tokens = echoed + tokens
            logprobs = {"tokens": all_tokens, "text_offset": list(range(len(all_tokens))),  # the first has none
                        "token_logprobs": [None if i == 0 else -0.5 for i in range(len(echoed))] + [-0.1] * len(tokens),
                        "top_logprobs": [None if i == 0 else top_for(t, -0.5) for i, t in enumerate(echoed)]
                        + [top_for(t, -0.1) for t in tokens]}
        return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "tiny-q8_0.gguf",
                "choices": [{"text": "".join(tokens), "index": 0, "logprobs": logprobs, "finish_reason": finish}],
                "usage": {"prompt_tokens": len(words(prompt)), "completion_tokens": len(tokens),
                          "total_tokens": len(words(prompt)) + len(tokens)}}

    def chat_answer(self, reply: list[str], finish: str, body: dict[str, Any]) -> dict[str, Any]:
        tokens = reply[:1]
        content = [{"token": t, "logprob": -0.1, "bytes": None,
                    "top_logprobs": [{"token": k, "logprob": v, "bytes": None} for k, v in top_for(t, -0.1).items()]}
                   for t in tokens]
        return {"id": "chat-1", "object": "chat.completion", "created": 0, "model": "tiny-q8_0.gguf",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                             "logprobs": {"content": content} if body.get("logprobs") else None,
                             "finish_reason": finish}]}

    def chunk(self, chat: bool, token: str | None, logprob: float, finish: str | None) -> dict[str, Any]:
        if chat:
            logprobs = None if token is None else {"content": [{"token": token, "logprob": logprob, "bytes": None,
                "top_logprobs": [{"token": k, "logprob": v, "bytes": None} for k, v in top_for(token, logprob).items()]}]}
            delta = {} if token is None else {"role": "assistant", "content": token}
            return {"id": "chat-1", "object": "chat.completion.chunk", "created": 0, "model": "tiny-q8_0.gguf",
                    "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
        logprobs = None if token is None else {"content": [content_item(token, logprob)]} \
            if self.flavour == "llama-server" else {"tokens": [token], "text_offset": [0], "token_logprobs": [logprob],
                                                    "top_logprobs": [top_for(token, logprob)]}
        return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "tiny-q8_0.gguf",
                "choices": [{"text": token or "", "index": 0, "logprobs": logprobs, "finish_reason": finish}]}

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
