"""The Starlette app: the OpenAI-compatible routes, /health, and lookinside's own facts, over one model.

`create_app(lm, settings, extra_routes)` builds it; a route added later reaches the model with
`await run_on_model(state_of(request), job)`, through the same bounded queue, and any error it
raises is answered as below. Every answer that is not a success is OpenAI's one-line error object:
4xx for what the client sent (a bad body, a wrong key, a prompt over the context), 503 with
Retry-After when the queue is full, and 500 only for a bug in the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lookinside import __version__
from lookinside.core import errors
from lookinside.serve import openai_api as oa
from lookinside.serve.openai_api import ApiError
from lookinside.serve.settings import ServeSettings
from lookinside.serve.worker import ModelWorker, QueueFull, stream_on_model
from lookinside.serve.worker import run_on_model as _run_on_worker

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM

T = TypeVar("T")
log = logging.getLogger("lookinside.serve")
RETRY_AFTER_S = 1
OPEN_PATHS = ("/health",)  # answered without the key, so a load balancer or a script can wait for the server


@dataclass
class AppState:
    """What every route shares: the model, the settings, the one worker, and the model's facts."""

    lm: LM
    settings: ServeSettings
    worker: ModelWorker
    info: dict[str, Any]
    tokens_generated: int = 0  # counted on the model's thread as each token is made: a cut generation shows here

    def counted(self, emit: oa.Emit) -> oa.Emit:
        """`emit`, counting each generated token on its way."""
        def emit_counted(item: Any) -> None:
            if isinstance(item, oa.Scored):
                self.tokens_generated += 1
            emit(item)

        return emit_counted

    @property
    def model_id(self) -> str:
        """The name the API serves the model under (`tiny`, a Hub id, a directory)."""
        return self.lm.name


def state_of(request: Request) -> AppState:
    """The app's shared state, from inside a route."""
    return request.app.state.lookinside


async def run_on_model(state: AppState, job: Callable[[], T]) -> T:
    """Run `job` on the model's thread through the bounded queue; a full queue is answered 503 by the app."""
    return await _run_on_worker(state.worker, job)


def create_app(lm: LM, settings: ServeSettings, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The app serving `lm` as `settings` say; `extra_routes` are added beside the built-in ones."""
    from lookinside.serve.views import view_routes  # every lookinside view, read from lookinside.views

    state = AppState(lm, settings, ModelWorker(settings.queue), model_info(lm, settings))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        state.worker.close()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/lookinside/v1/info", info, methods=["GET"]),
        *view_routes(),
        *extra_routes,
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, QueueFull: _queue_full,
                errors.LookinsideError: _api_error, Exception: _api_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)  # type: ignore[arg-type]
    app.state.lookinside = state
    app.add_middleware(KeyCheck, key=settings.api_key)  # type: ignore[arg-type]
    return app


def model_info(lm: LM, settings: ServeSettings) -> dict[str, Any]:
    """The served model's facts, as /lookinside/v1/info gives them."""
    return {
        "lookinside": True, "version": __version__, "model": lm.name, "source": lm.source,
        "dtype": str(lm.dtype).removeprefix("torch."), "device": str(lm.device), "context_length": lm.context_length,
        "parameters": sum(p.numel() for p in lm.model.parameters()), "attention": lm.attn_implementation,
        "spec": json.loads(json.dumps(asdict(settings.spec))),
        "limits": {"queue": settings.queue, "max_tokens": settings.max_tokens or lm.context_length,
                   "max_logprobs": settings.max_logprobs, "max_body_bytes": settings.max_body_bytes},
    }


# ---- routes


async def health(request: Request) -> Response:
    """200 while the server runs."""
    return _json({"status": "ok"})


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
    items = stream_on_model(state.worker, job)
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
    leaving = asyncio.ensure_future(_disconnected(request))
    done, _ = await asyncio.wait({gathering, leaving}, return_when=asyncio.FIRST_COMPLETED)
    if gathering in done:
        leaving.cancel()
        return gathering.result()
    gathering.cancel()  # leaves the job's stream, which sets its cancel flag
    raise ApiError("the client disconnected", status=499, kind="client_closed_request")


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by then, so only a disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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


async def _chat_chunks(request: oa.ChatRequest, started: _Started, model: str, rid: str) -> AsyncIterator[dict[str, Any]]:
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
            yield b"data: " + _dumps(_error_for(exc).body()) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# ---- requests


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refused past `limit` bytes (before reading it all) or when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"the body is not JSON ({str(exc).splitlines()[0]})") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(f"the request body is over this server's limit of {limit:,} bytes", status=413,
                    kind="request_too_large")


def _check_model(state: AppState, model: str | None) -> None:
    if model is not None and model != state.model_id:
        raise ApiError(f"The model `{model}` does not exist.", status=404, kind="NotFoundError", param="model")


# ---- the key


class KeyCheck:
    """Refuse every request but /health without `Authorization: Bearer <key>` (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.key = key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        error = ApiError("the API key is missing or wrong", status=401, kind="authentication_error")
        await _json(error.body(), 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key or b"")


# ---- errors: one line each, never a traceback


def _error_for(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QueueFull):
        return ApiError(f"the server is busy: {exc}; retry in a moment", status=503, kind="server_busy")
    if isinstance(exc, errors.BadInput):
        return ApiError(str(exc), status=400)
    if isinstance(exc, errors.LookinsideError):
        return ApiError(str(exc), status=500, kind="server_error")
    if errors.is_out_of_memory(exc):
        return ApiError("the server ran out of memory on this request: try a shorter prompt or fewer tokens",
                        status=507, kind="server_error")
    log.error("a bug in the server: %s: %s", type(exc).__name__, (str(exc).splitlines() or [""])[0])
    return ApiError(f"internal error ({type(exc).__name__}): a bug in lookinside's server", status=500,
                    kind="server_error")


async def _api_error(request: Request, exc: Exception) -> Response:
    error = _error_for(exc)
    return _json(error.body(), error.status)


async def _queue_full(request: Request, exc: Exception) -> Response:
    error = _error_for(exc)
    return _json(error.body(), error.status, {"Retry-After": str(RETRY_AFTER_S)})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    error = ApiError(message.get(exc.status_code, str(exc.detail)), status=exc.status_code,
                     kind=kinds.get(exc.status_code, "invalid_request_error"))
    return _json(error.body(), exc.status_code, dict(exc.headers or {}))


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(data), status_code=status, headers=headers, media_type="application/json")
