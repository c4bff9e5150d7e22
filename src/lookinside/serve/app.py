"""The Starlette app: the OpenAI-compatible routes, /health, and lookinside's own facts, over one model.

`create_app(lm, settings, extra_routes)` builds it; a route added later reaches the model with
`await run_on_model(state_of(request), job)`, through the same bounded queue, and any error it
raises is answered as below. Every answer that is not a success is OpenAI's one-line error object:
4xx for what the client sent (a bad body, a wrong key, a prompt over the context), 503 with
Retry-After when the queue is full, and 500 only for a bug in the server. What reaches a route
has passed the door (serve/door.py: Host, Origin, key, content type); a body is read by `read_json`,
which refuses what no field could hold (deep nesting, lone surrogates, numbers past 64 bits or
non-finite). Every job runs with a hook that cuts it at its next forward pass once its client has
gone or the server is stopping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from lookinside import __version__
from lookinside.core import errors
from lookinside.core.decoding.detokenize import token_text
from lookinside.core.model.quantize import parameter_count
from lookinside.core.sampling_params import FIELDS
from lookinside.serve import openai_api as oa
from lookinside.serve.chat import chat_routes  # what a chat through the server needs: fit, count, steer, reply
from lookinside.serve.door import WHOAMI_PATH, Door
from lookinside.serve.door import dumps as _dumps
from lookinside.serve.door import json_response as _json
from lookinside.serve.openai_api import ApiError
from lookinside.serve.routing import (
    AppState,
    cut_when,
    disconnected,
    error_for,
    read_json,
    run_on_model,  # noqa: F401 (docs/serve.md: a route added later imports it from here)
    state_of,
)
from lookinside.serve.settings import ServeSettings
from lookinside.serve.views import view_routes  # every lookinside view, read from lookinside.views
from lookinside.serve.web import is_page, web_routes  # the web inspector at /, drawn from those views
from lookinside.serve.worker import Cut, ModelWorker, QueueFull, stream_on_model

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.serve.decoder import Decoder

RETRY_AFTER_S = 1


def create_app(lm: LM, settings: ServeSettings, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The app serving `lm` as `settings` say; `extra_routes` are added beside the built-in ones."""
    from lookinside.core.model.loading import use_threads  # deferred: torch (the app needs it anyway)

    # The model's thread count, chosen at load, on the model's own thread: each thread has its own count.
    facts = model_info(lm, settings)
    worker = ModelWorker(settings.queue, lambda streaming: use_threads(lm, streaming),
                         beside=beside(lm, settings, lambda where: facts.update(decoder=where)))
    state = AppState(lm, settings, worker, facts)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        state.worker.close()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route(WHOAMI_PATH, whoami, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/lookinside/v1/info", info, methods=["GET"]),
        *view_routes(),
        *chat_routes(),
        *web_routes(),
        *extra_routes,
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, QueueFull: _queue_full, Cut: _api_error,
                errors.LookinsideError: _api_error}  # anything else is a bug: the door makes it one line
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)  # type: ignore[arg-type]
    app.state.lookinside = state
    app.add_middleware(Door, settings=settings, also_open=is_page)  # type: ignore[arg-type]
    return app


def beside(lm: LM, settings: ServeSettings,
           say: Callable[[str], None]) -> Callable[[Callable[[], None], int], Decoder | None] | None:
    """What starts the decoder's process when the batch decodes in one (`settings.decoder`); None: on the thread.
    `say` is told where the batch decodes, and why where "auto" chose the thread.

    "process" where the model cannot share its weights, or where the process fails to start, is refused in one
    line; "auto" then stays on the thread."""
    if settings.decoder == "thread":
        say("thread")
        return None
    from lookinside.serve.decoder import Decoder, DecoderGone, why_not  # deferred: torch

    def refused(reason: str) -> None:
        if settings.decoder == "process":
            raise errors.BadInput(f"--decoder process: {reason}")
        say(f"thread ({reason})")

    reason = why_not(lm)
    if reason is not None:
        refused(reason)
        return None

    def start(flush: Callable[[], None], size: int) -> Decoder | None:
        try:
            decoder = Decoder(lm, size, flush)
        except DecoderGone as exc:
            refused(exc.message)
            return None
        say(f"process (pid {decoder.pid})")
        return decoder

    return start


def model_info(lm: LM, settings: ServeSettings) -> dict[str, Any]:
    """The served model's facts, as /lookinside/v1/info gives them."""
    return {
        "lookinside": True, "version": __version__, "model": lm.name, "source": lm.source,
        "dtype": str(lm.dtype).removeprefix("torch."), "device": str(lm.device), "context_length": lm.context_length,
        "parameters": parameter_count(lm.model), "attention": lm.attn_implementation,
        "spec": json.loads(json.dumps(asdict(settings.spec))),
        "samplers": [f.name for f in FIELDS],  # a client refuses in one line a sampler this server lacks
        "threads": lm.threads.count if lm.threads and lm.device.type == "cpu" else None,  # a chat's stats line
        "quantized": lm.quantized.short() if lm.quantized else None,
        "end_tokens": [[i, token_text(lm.tokenizer, i)] for i in lm.end_token_ids],  # chat's /show
        "chat_template": getattr(lm.tokenizer, "chat_template", None),
        "limits": {"queue": settings.queue, "max_tokens": settings.max_tokens or lm.context_length,
                   "max_logprobs": settings.max_logprobs, "max_body_bytes": settings.max_body_bytes},
    }


# ---- routes


async def health(request: Request) -> Response:
    """200 while the server runs."""
    return _json({"status": "ok"})


async def whoami(request: Request) -> Response:
    """The proof that this is the recorded server: its pid, and an HMAC of the caller's challenge under the nonce
    only its record holds (so a command sends the key only to the server that wrote the record)."""
    challenge = request.query_params.get("challenge", "")
    if not 16 <= len(challenge) <= 128 or not challenge.isalnum():
        raise ApiError("whoami wants ?challenge= 16 to 128 letters or digits", param="challenge")
    return _json({"lookinside": True, "pid": os.getpid(), "proof": proof(state_of(request).nonce, challenge)})


def proof(nonce: bytes, challenge: str) -> str:
    """What the server with `nonce` answers to `challenge` (hex HMAC-SHA256)."""
    return hmac.new(nonce, challenge.encode("ascii"), hashlib.sha256).hexdigest()


async def info(request: Request) -> Response:
    """The served model's facts, and that this is a lookinside server."""
    state = state_of(request)
    return _json({**state.info, "queue": {"waiting": state.worker.waiting, "busy": state.worker.busy},
                  "tokens_generated": state.tokens_generated})


async def models(request: Request) -> Response:
    """The one served model, as vLLM lists it."""
    state = state_of(request)
    card = {"id": state.model_id, "object": "model", "created": int(state.info.get("started", 0)),
            "owned_by": "lookinside", "root": state.lm.source or state.model_id, "parent": None,
            "max_model_len": state.lm.context_length, "permission": []}
    return _json({"object": "list", "data": [card]})


async def completions(request: Request) -> Response:
    """POST /v1/completions."""
    return await _generation(request, oa.parse_completion, oa.completion_job, _completion_chunks,
                             oa.completion_response, "cmpl")


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    return await _generation(request, oa.parse_chat, oa.chat_job, _chat_chunks, oa.chat_response, "chatcmpl")


async def _generation(request: Request, parse: Callable[..., Any], job: Callable[..., Any],
                      chunks: Callable[..., Any], respond: Callable[..., Any], prefix: str) -> Response:
    """One OpenAI generation route: parse the body, check the model, start the job, then stream it or answer whole."""
    state = state_of(request)
    parsed = parse(await read_json(request, state.settings.max_body_bytes), state.settings)
    _check_model(state, parsed.sampling.model)
    items = await _start(state, lambda emit, cancel: job(state.lm, parsed, state.settings, state.counted(emit), cancel))
    rid, model = oa.new_id(prefix, parsed.sampling.request_id), state.model_id
    if parsed.sampling.stream:
        return _sse(chunks(parsed, items, model, rid))
    answer = await _gather_while_connected(request, items)
    return _json(respond(parsed, answer, model, rid))


# ---- streaming


class _Started:
    """A job's stream whose first item (the Prologue) has come: a bad prompt was refused before any answer."""

    def __init__(self, prologue: oa.Prologue, rest: AsyncIterator[Any]) -> None:
        self.prologue, self.rest = prologue, rest


async def _start(state: AppState, job: Callable[[oa.Emit, Any], None]) -> _Started:
    items = stream_on_model(state.worker, lambda emit, cancel: cut_when(state.lm, cancel, lambda: job(emit, cancel)))
    try:
        first = await items.__anext__()
    except StopAsyncIteration:
        raise ApiError("the server is shutting down", status=503, kind="server_shutting_down") from None
    return _Started(first, items)


async def _gather(started: _Started) -> oa.Answer:
    answer = oa.Answer(started.prologue)
    async for token in started.rest:
        answer.add(token)
    return answer


async def _gather_while_connected(request: Request, started: _Started) -> oa.Answer:
    """The whole reply; if the client disconnects first, its generation stops at the next token."""
    gathering = asyncio.ensure_future(_gather(started))
    leaving = asyncio.ensure_future(disconnected(request))
    done, _ = await asyncio.wait({gathering, leaving}, return_when=asyncio.FIRST_COMPLETED)
    if gathering in done:
        leaving.cancel()
        return gathering.result()
    gathering.cancel()  # leaves the job's stream, which sets its cancel flag
    raise ApiError("the client disconnected", status=499, kind="client_closed_request")


async def _completion_chunks(request: oa.CompletionRequest, started: _Started, model: str,
                             rid: str) -> AsyncIterator[dict[str, Any]]:
    answer, choices = oa.Answer(started.prologue), started.prologue.choices
    offsets = {c.index: len(c.echo_text) for c in choices}
    if request.echo:
        for c in choices:
            yield oa.completion_chunk(request, list(c.echoed), c.echo_text, None, model, rid, 0, c.index)
    async for token in started.rest:
        answer.add(token)
        yield oa.completion_chunk(request, [token], token.text, token.finish, model, rid, offsets[token.index],
                                  token.index, token.stop_reason)
        offsets[token.index] += len(token.text)
    for c in choices:
        if not answer.of(c.index):
            yield oa.completion_chunk(request, [], "", "length", model, rid, offsets[c.index], c.index)
    if request.sampling.include_usage:
        yield oa.usage_chunk(answer, rid, model, "text_completion")


async def _chat_chunks(request: oa.ChatBody, started: _Started, model: str, rid: str) -> AsyncIterator[dict[str, Any]]:
    answer = oa.Answer(started.prologue)
    for c in started.prologue.choices:
        yield oa.chat_chunk(request, {"role": "assistant", "content": ""}, [], None, model, rid, c.index)
    async for token in started.rest:
        answer.add(token)
        yield oa.chat_chunk(request, {"content": token.text}, [token], token.finish, model, rid, token.index,
                            token.stop_reason)
    if request.sampling.include_usage:
        yield oa.usage_chunk(answer, rid, model, "chat.completion.chunk")


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield b"data: " + _dumps(chunk) + b"\n\n"
        except Exception as exc:  # noqa: BLE001 (after the 200 is sent, an error can only be one more event)
            yield b"data: " + _dumps(error_for(exc).body()) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# ---- requests


def _check_model(state: AppState, model: str | None) -> None:
    if model is not None and model != state.model_id:
        raise ApiError(f"The model `{model}` does not exist.", status=404, kind="NotFoundError", param="model")


# ---- errors: one line each, never a traceback


async def _api_error(request: Request, exc: Exception) -> Response:
    error = error_for(exc, state_of(request).settings.debug)
    return _json(error.body(), error.status)


async def _queue_full(request: Request, exc: Exception) -> Response:
    error = error_for(exc)
    return _json(error.body(), error.status, {"Retry-After": str(RETRY_AFTER_S)})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    error = ApiError(message.get(exc.status_code, str(exc.detail)), status=exc.status_code,
                     kind=kinds.get(exc.status_code, "invalid_request_error"))
    return _json(error.body(), exc.status_code, dict(exc.headers or {}))


