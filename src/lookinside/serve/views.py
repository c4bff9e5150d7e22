"""Every lookinside view as a route: `POST /lookinside/v1/views/<name>` with the request's fields as JSON.

The answer is `{"view", "json", "record"}`: `json` is exactly what `llm <name> --json` prints, and
`record` the record itself (core/wire.py), which `llm <name> --endpoint` and `li.connect` draw
with the same view as a local run. The routes are read from lookinside.views.VIEWS, so a view
added there is served with no code here. `GET /lookinside/v1/views` lists them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lookinside.serve.app import _json, read_json, run_on_model, state_of
from lookinside.serve.openai_api import ApiError
from lookinside.views import VIEWS, answer_json


async def answer_view(request: Request) -> Response:
    """One view's answer, computed on the model's thread through the queue."""
    state, name = state_of(request), request.path_params["name"]
    if name not in VIEWS:
        raise ApiError(f"no view {name!r}; the views are {', '.join(sorted(VIEWS))}", status=404, kind="not_found")
    body = await read_json(request, state.settings.max_body_bytes)
    return _json(await run_on_model(state, lambda: answer_json(state.lm, name, body)))


async def list_views(request: Request) -> Response:
    """The views this server answers, with what each needs and its request's fields."""
    return _json({"views": [{"name": view.name, "help": view.help, "needs": view.needs,
                             "request": [f for f in view.request.__dataclass_fields__]} for view in VIEWS.values()]})


def view_routes() -> list[Route]:
    """The routes to add to the app."""
    return [Route("/lookinside/v1/views", list_views, methods=["GET"]),
            Route("/lookinside/v1/views/{name}", answer_view, methods=["POST"])]
