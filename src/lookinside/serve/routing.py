"""What every route of `llm serve` shares: the app's state, a job run on the model's thread, a JSON body read and
checked, and any error as OpenAI's one-line error object.

app.py (the OpenAI routes), chat.py, views.py and web.py all build on these, so none of them imports another's
routes. A job is cut at its next forward pass once its client has gone or the server is stopping.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request

from lookinside.core import errors
from lookinside.serve import openai_api as oa
from lookinside.serve.door import unexpected
from lookinside.serve.openai_api import ApiError
from lookinside.serve.settings import ServeSettings
from lookinside.serve.worker import Cancel, Cut, ModelWorker, QueueFull, ServerStopping

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM

T = TypeVar("T")
MAX_DEPTH = 32  # JSON nesting: the deepest request (a chat message's content parts) needs 5
LARGEST_INT = 2**63  # a number no field takes beyond: seeds are 64-bit, and torch's integers too


@dataclass
class AppState:
    """What every route shares: the model, the settings, the one worker, and the model's facts."""

    lm: LM
    settings: ServeSettings
    worker: ModelWorker
    info: dict[str, Any]
    nonce: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)  # in the record; never sent
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
    """Run `job` on the model's thread through the bounded queue; a full queue is answered 503 by the app.

    The job is cut at its next forward pass when the awaiting task is cancelled or the server stops.
    """
    cancel = state.worker.cancel()
    future = state.worker.submit(lambda: cut_when(state.lm, cancel, job))
    try:
        return await asyncio.wrap_future(future)
    finally:
        cancel.set()  # a job still running (its caller left) stops at its next forward pass
        future.cancel()


async def run_while_connected(request: Request, job: Callable[[], T]) -> T:
    """`run_on_model`, cut at its next forward pass if the client disconnects first (answered 499)."""
    running = asyncio.ensure_future(run_on_model(state_of(request), job))
    leaving = asyncio.ensure_future(disconnected(request))
    done, _ = await asyncio.wait({running, leaving}, return_when=asyncio.FIRST_COMPLETED)
    if running in done:
        leaving.cancel()
        return running.result()
    running.cancel()
    raise ApiError("the client disconnected", status=499, kind="client_closed_request")


def cut_when(lm: LM, cancel: Cancel, job: Callable[[], T]) -> T:
    """`job()`, with a hook that raises `Cut` before any forward pass once `cancel` is set (removed after)."""
    with cut_at_next_pass(lm, cancel):
        return job()


@contextmanager
def cut_at_next_pass(lm: LM, cancel: Cancel) -> Iterator[None]:
    """While inside, every forward pass of the model first checks `cancel`: a view, a sweep or a generation all
    stop at their next step, whichever loop runs them."""
    def check(module: Any, args: Any) -> None:
        if cancel:
            raise ServerStopping() if cancel.stopping else Cut()

    handle = lm.model.register_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


async def disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by then, so only a disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
        data = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(f"the body is nested more than {MAX_DEPTH} deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"the body is not JSON ({str(exc).splitlines()[0]})") from None
    check_values(data)
    return data


def check_values(data: Any) -> None:
    """Refuse what no field takes: nesting past MAX_DEPTH, text that is not Unicode (a lone surrogate), an integer
    of 64 bits or more (walked without recursion, so a deep body cannot overflow the stack)."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise ApiError(f"the body is nested more than {MAX_DEPTH} deep")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(f"the body holds text that is not Unicode (a lone surrogate, {value[:20]!r}...)") from None
        elif isinstance(value, int) and not isinstance(value, bool) and not -LARGEST_INT <= value < LARGEST_INT:
            raise ApiError(f"the body holds the number {str(value)[:30]}, past what any field takes (64 bits)")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:30]} is past the largest number a field takes")
    return value


def _too_large(limit: int) -> ApiError:
    return ApiError(f"the request body is over this server's limit of {limit:,} bytes", status=413,
                    kind="request_too_large")


def error_for(exc: BaseException, debug: bool = False) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ServerStopping):
        return ApiError("the server is shutting down: the job was cut", status=503, kind="server_shutting_down")
    if isinstance(exc, Cut):
        return ApiError("the client disconnected", status=499, kind="client_closed_request")
    if isinstance(exc, QueueFull):
        return ApiError(f"the server is busy: {exc}; retry in a moment", status=503, kind="server_busy")
    if isinstance(exc, errors.BadInput):
        return ApiError(str(exc), status=400)
    if isinstance(exc, errors.LookinsideError):  # the request, on this model, cannot be answered (an intervention
        return ApiError(str(exc), status=422, kind="unprocessable_request")  # that overflows it), not a bug
    if errors.is_out_of_memory(exc):
        return ApiError("the server ran out of memory on this request: try a shorter prompt or fewer tokens",
                        status=507, kind="server_error")
    return unexpected(exc, debug)
