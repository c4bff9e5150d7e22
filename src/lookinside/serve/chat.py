"""What a chat through `llm serve` needs beyond the OpenAI routes, so it has every command it has here.

- `POST /lookinside/v1/chat/fit`: a conversation (`system`, `messages`, `window`, `settings`, and the
  `continuation` of /continue) fitted into the context by core/chat/conversation.fit, the same
  call the model here makes: `{"ids", "dropped_turns", "dropped_tokens", "window"}`.
- `POST /lookinside/v1/chat/count`: the tokens the conversation takes in the template (/tokens).
- `POST /lookinside/v1/chat/steer`: `{add, subtract, layer, alpha}` -> the steer with its layer resolved
  by the model (/steer), refused in one line as `llm steer` refuses it.
- `POST /lookinside/v1/chat/reply`: fitted `ids`, `params`, `max_new_tokens` and an optional `steer`
  -> the reply as it is made, one JSON object a line: `{"start": true}` once the request is
  checked, then `{"step": <Step>, "texts": {id: text}}` per token (the texts of the token and its
  alternatives, so /why and the journal read them without asking again; on CUDA the last one also
  has the reply's `peak_memory_bytes`), or `{"error": ...}`.
  It runs the one token loop (core/decoding/generate.py), steered by steer.py's `steered` as a
  chat here is, one step per job on the model's thread: the batch's sequences step in between,
  and the steer's hook is on only while its own step computes, so it never reaches them.

Every route is behind the same door as the others (JSON, key, Host, body size) and its limits:
`max_new_tokens` within `--max-tokens`, the prompt and reply within the context, a 4xx in one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from lookinside.core.chat.conversation import Conversation, count_tokens, fit
from lookinside.core.chat.defaults import DEFAULT_MAX_NEW_TOKENS, ChatSettings
from lookinside.core.decoding.detokenize import token_text
from lookinside.core.decoding.prompting import check_fits
from lookinside.core.errors import BadInput
from lookinside.core.inside.interventions.records import SteerSpec
from lookinside.core.inside.interventions.requests import check_alpha
from lookinside.core.request import GenerationSettings
from lookinside.core.rules import new_tokens
from lookinside.core.sampling_params import SamplingParams
from lookinside.core.wire import from_wire, to_wire
from lookinside.serve.door import dumps
from lookinside.serve.door import json_response as _json
from lookinside.serve.openai_api import check_ids
from lookinside.serve.routing import AppState, error_for, read_json, run_on_model, run_while_connected, state_of
from lookinside.serve.settings import ServeSettings
from lookinside.serve.views import check_new_tokens
from lookinside.serve.worker import QueueFull

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.core.records import Step

ROLES = ("user", "assistant")
BUSY_WAIT_S, BUSY_TRIES = 0.05, 600  # a reply's next step waits up to 30 s for a place in a full queue


async def fit_route(request: Request) -> Response:
    """The conversation fitted into the context, as the model here fits it."""
    state = state_of(request)
    body = _object(await read_json(request, state.settings.max_body_bytes))
    conversation, continuation = _conversation(body)
    check_new_tokens(conversation.settings.max_new_tokens, state.settings, state.lm.context_length)
    fitted = await run_while_connected(
        request, lambda: fit(state.lm.tokenizer, conversation, state.lm.context_length, continuation))
    return _json({"ids": fitted.ids, "dropped_turns": fitted.dropped_turns, "dropped_tokens": fitted.dropped_tokens,
                  "window": conversation.window})


async def count_route(request: Request) -> Response:
    """The tokens the conversation takes in the chat template (0 when it is empty)."""
    state = state_of(request)
    body = _object(await read_json(request, state.settings.max_body_bytes))
    conversation, _ = _conversation(body)
    count = await run_while_connected(request, lambda: count_tokens(state.lm.tokenizer, conversation))
    return _json({"tokens": count})


async def steer_route(request: Request) -> Response:
    """The steer made on the served model: its layer resolved, refused in one line where `llm steer` refuses."""
    from lookinside.core.inside.interventions.steer import steering  # deferred: torch

    state = state_of(request)
    body = _object(await read_json(request, state.settings.max_body_bytes))
    add, subtract = _text(body, "add"), _text(body, "subtract", optional=True)
    layer, alpha = _number(body, "layer", int), _number(body, "alpha", float)
    check_alpha(alpha)
    made = await run_while_connected(request, lambda: steering(state.lm, add, subtract, int(layer), alpha).spec)
    return _json({"steer": to_wire(made)})


async def reply_route(request: Request) -> Response:
    """The reply to fitted ids, streamed a step a line (see the module's docstring)."""
    state = state_of(request)
    body = _object(await read_json(request, state.settings.max_body_bytes))
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise BadInput("ids must be the fitted prompt's token ids, a list of at least one integer")
    params = from_wire(SamplingParams, body.get("params", {}), "params")
    tokens = _max_new_tokens(body, state.settings, state.lm.context_length)
    steer = from_wire(SteerSpec, body["steer"], "steer") if body.get("steer") is not None else None
    reply = Reply(state.lm, ids, params, tokens, steer)
    first = await run_while_connected(request, reply.start)  # a refusal is the request's 4xx, before any token
    return StreamingResponse(_ndjson(first, _steps(state, reply)), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-cache"})


class Reply:
    """A chat reply made one step per job on the model's thread, so the batch's sequences step in between (and a
    steer's hook, on only while its own step computes, never reaches them)."""

    def __init__(self, lm: LM, ids: list[int], params: SamplingParams, max_new_tokens: int,
                 steer: SteerSpec | None) -> None:
        self.lm, self.ids, self.params, self.max_new_tokens, self.steer = lm, ids, params, max_new_tokens, steer
        self.steps: Iterator[Step] = iter(())

    def start(self) -> dict[str, Any]:
        """Check the ids, make the steer, start the one token loop (steered as a chat here is)."""
        from lookinside.core.decoding.generate import generate  # deferred: torch
        from lookinside.core.decoding.timing import reset_peak_memory  # deferred: torch
        from lookinside.core.inside.interventions.steer import steered, steering  # deferred: torch

        check_ids(self.lm, self.ids)
        check_fits(len(self.ids), self.lm.context_length, self.max_new_tokens)
        reset_peak_memory(self.lm.device)  # CUDA: the reply's stats line shows its peak, as a chat here does
        steer = self.steer
        made = steering(self.lm, steer.add, steer.subtract, steer.depth, steer.alpha) if steer is not None else None
        stream = generate(self.lm, self.ids, self.params, GenerationSettings(max_new_tokens=self.max_new_tokens))
        self.steps = steered(self.lm, stream, made) if made is not None else stream
        return {"start": True}

    def next(self) -> dict[str, Any] | None:
        """The next step with its tokens' texts (for /why and the journal); None at the reply's end."""
        from lookinside.core.decoding.timing import peak_memory_bytes  # deferred: torch

        step = next(self.steps, None)
        if step is None:
            return None
        ids = (step.token_id, *(i for i, _ in step.top))
        item = {"step": to_wire(step), "texts": {str(i): token_text(self.lm.tokenizer, i) for i in ids}}
        if step.finish is not None and self.lm.device.type == "cuda":  # with the last step: the reply's peak (what
            item["peak_memory_bytes"] = peak_memory_bytes(self.lm.device)  # ran beside it on the server included)
        return item


async def _steps(state: AppState, reply: Reply) -> AsyncIterator[dict[str, Any]]:
    """Each step, one job each: a client that leaves cancels the awaited job, which stops at its forward pass."""
    busy = 0
    while True:
        try:
            item = await run_on_model(state, reply.next)
        except QueueFull:  # every place taken for now: this reply waits its turn rather than fail mid-way
            busy += 1
            if busy > BUSY_TRIES or state.worker.closing.is_set():  # a server shutting down takes no more
                raise
            await asyncio.sleep(BUSY_WAIT_S)
            continue
        if item is None:
            return
        busy = 0
        yield item


async def _ndjson(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    yield dumps(first) + b"\n"
    try:
        async for item in rest:
            yield dumps(item) + b"\n"
    except Exception as exc:  # noqa: BLE001 (after the 200 is sent, an error can only be one more line)
        yield dumps(error_for(exc).body()) + b"\n"


# ---- the request's fields, each refused in one line


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def _conversation(body: dict[str, Any]) -> tuple[Conversation, str | None]:
    """The conversation a chat client sent, and the reply it continues (None for a new reply)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadInput("messages must be a list of {role, content} objects")
    for n, message in enumerate(messages):
        if not (isinstance(message, dict) and message.get("role") in ROLES and isinstance(message.get("content"), str)):
            raise BadInput(f"messages[{n}] must be an object with role (user or assistant) and content (text)")
    window = body.get("window", 0)
    if not isinstance(window, int) or isinstance(window, bool) or not 0 <= window <= len(messages):
        raise BadInput(f"window must be an integer in [0, {len(messages)}] (the first message still sent)")
    raw = body.get("settings")
    if not isinstance(raw, dict):
        raise BadInput("settings must be the chat's settings object (params, max_new_tokens, trim)")
    trim = raw.get("trim", True)
    if not isinstance(trim, bool):
        raise BadInput(f"settings.trim must be true or false, not {str(trim)[:40]}")
    chat = ChatSettings(params=from_wire(SamplingParams, raw.get("params", {}), "settings.params"),
                        max_new_tokens=new_tokens(raw.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
                                                  "settings.max_new_tokens"), trim=trim)
    system = _text(body, "system", optional=True)
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    return Conversation(system, turns, chat, window), _text(body, "continuation", optional=True)


def _max_new_tokens(body: dict[str, Any], settings: ServeSettings, context: int) -> int:
    """A reply's length, within --max-tokens and leaving room in the context (as the view routes hold it)."""
    tokens = new_tokens(body.get("max_new_tokens"))
    check_new_tokens(tokens, settings, context)
    return tokens


def _text(body: dict[str, Any], name: str, optional: bool = False) -> Any:
    value = body.get(name)
    if (value is None and optional) or isinstance(value, str):
        return value
    raise BadInput(f"{name} must be text{' or null' if optional else ''}, not {str(value)[:40]}")


def _number(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise BadInput(f"{name} must be {'a number' if kind is float else 'an integer'}, not {str(value)[:40]}")
    return kind(value)


def chat_routes() -> list[Route]:
    """The routes to add to the app."""
    return [Route("/lookinside/v1/chat/fit", fit_route, methods=["POST"]),
            Route("/lookinside/v1/chat/count", count_route, methods=["POST"]),
            Route("/lookinside/v1/chat/steer", steer_route, methods=["POST"]),
            Route("/lookinside/v1/chat/reply", reply_route, methods=["POST"])]
