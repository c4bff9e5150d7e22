"""Every lookinside view as a route: `POST /lookinside/v1/views/<name>` with the request's fields as JSON.

The answer is `{"view", "record"}`: the record itself (core/wire.py), which `llm <name> --endpoint`,
`li.connect` and the web inspector draw with the same view as a local run; it is also exactly what
`llm <name> --json` prints. The routes are read from lookinside.views.VIEWS, so a view added there is served with no code here. `GET /lookinside/v1/views` lists them.

A view is held to the server's limits as the OpenAI routes are: the tokens each of its runs
generates at most `--max-tokens` (compare's greedy run and every sample, steer's two runs), and
its prompt plus them within the context; a request over either is a 400 naming the limit before
it waits in the queue. A client that leaves stops the view at its next forward pass.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lookinside.core.errors import BadInput
from lookinside.core.inside.interventions.requests import SteerRequest
from lookinside.core.request import CompareRequest
from lookinside.core.wire import from_wire
from lookinside.serve.door import json_response as _json
from lookinside.serve.openai_api import ApiError
from lookinside.serve.routing import read_json, run_while_connected, state_of
from lookinside.serve.settings import ServeSettings
from lookinside.views import VIEWS, answer_record


async def answer_view(request: Request) -> Response:
    """One view's answer, computed on the model's thread through the queue."""
    state, name = state_of(request), request.path_params["name"]
    if name not in VIEWS:
        raise ApiError(f"no view {name!r}; the views are {', '.join(sorted(VIEWS))}", status=404, kind="not_found")
    body = await read_json(request, state.settings.max_body_bytes)
    if isinstance(body, dict):  # anything else is refused by answer_record, in one line
        check_cost(from_wire(VIEWS[name].request, body), state.settings, state.lm.context_length)
    return _json(await run_while_connected(request, lambda: answer_record(state.lm, name, body)))


def generated(request: Any) -> tuple[int, int] | None:
    """(runs, tokens each run may generate) for a view that generates; None for one forward pass or a sweep
    (whose passes are fixed by the model's shape, and their length by the context)."""
    if isinstance(request, CompareRequest):
        return request.samples + 1, request.settings.max_new_tokens
    if isinstance(request, SteerRequest):
        return 2, request.max_new_tokens
    return None


def check_cost(request: Any, settings: ServeSettings, context: int) -> None:
    """Refuse a view that would generate past --max-tokens per run, or more tokens than the context holds."""
    cost = generated(request)
    if cost is not None:
        check_new_tokens(cost[1], settings, context)


def check_new_tokens(tokens: int, settings: ServeSettings, context: int) -> None:
    """Refuse a run of `tokens` new tokens past --max-tokens, or one that leaves no room in the context."""
    limit = settings.max_tokens or context
    if tokens > limit:
        raise BadInput(f"max_new_tokens must be in [1, {limit}] on this server (--max-tokens), not {tokens}")
    if tokens >= context:
        raise BadInput(f"max_new_tokens {tokens} leaves no room in the model's context of {context} tokens")


async def list_views(request: Request) -> Response:
    """The views this server answers, with what each needs and its request's fields."""
    return _json({"views": [{"name": view.name, "help": view.help, "needs": view.needs,
                             "request": [f for f in view.request.__dataclass_fields__]} for view in VIEWS.values()]})


def view_routes() -> list[Route]:
    """The routes to add to the app."""
    return [Route("/lookinside/v1/views", list_views, methods=["GET"]),
            Route("/lookinside/v1/views/{name}", answer_view, methods=["POST"])]
