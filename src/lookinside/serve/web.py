"""The web inspector: `llm serve` serves a page at `/` that draws every view from the view routes' JSON.

The page is plain files shipped in the package (serve/web/: HTML, CSS and JavaScript modules, no
build step, nothing fetched from elsewhere). It asks the same `POST /lookinside/v1/views/<name>`
routes the commands use, so its numbers are the commands' numbers. Two small routes help it:
`GET /lookinside/v1/web/forms`, each view's request fields as `VIEWS` defines them (so the page's
forms and its addresses take the route's field names), and `POST /lookinside/v1/web/pieces`, the
tokenizer's text for token ids (a generation's runners-up travel as ids). The page and its files
are served without the API key (they hold nothing of the model's; the page asks for the key and
sends it with every request), under a Content-Security-Policy that lets it talk only to this
server.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
import webbrowser
from importlib import resources
from typing import Any, Literal, Union, get_args, get_origin

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lookinside.core.backends.http import server_root
from lookinside.core.decoding.detokenize import token_text
from lookinside.serve.door import json_response as _json
from lookinside.serve.openai_api import ApiError
from lookinside.serve.routing import read_json, run_on_model, state_of
from lookinside.views import VIEWS

# The page's own files, by the name it asks for; nothing else is served from the folder.
FILES = {"index.html": "text/html", "style.css": "text/css", "app.js": "text/javascript",
         "api.js": "text/javascript", "draw.js": "text/javascript", "panels.js": "text/javascript",
         "sampling.js": "text/javascript", "favicon.svg": "image/svg+xml"}
STATIC = "/web/"
# The page may load only its own files and talk only to its own server (fetch, and nothing framed or sent elsewhere).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
MAX_PIECES = 4096  # ids per /pieces request: a generation's runners-up are a few hundred


def is_page(path: str) -> bool:
    """True for the page and its files: served without the API key, since they hold nothing of the model's."""
    return path == "/" or (path.startswith(STATIC) and path[len(STATIC):] in FILES)


def _file(name: str) -> Response:
    body = resources.files("lookinside.serve").joinpath("web", name).read_bytes()
    return Response(body, media_type=FILES[name], headers={
        "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer"})


async def page(request: Request) -> Response:
    """The inspector's page."""
    return _file("index.html")


async def static(request: Request) -> Response:
    """One of the page's files (a name not in FILES is a 404)."""
    name = request.path_params["name"]
    if name not in FILES:
        raise ApiError(f"no file {name!r} in the web inspector", status=404, kind="not_found")
    return _file(name)


def field_form(kind: Any, default: Any, metadata: Any) -> dict[str, Any]:
    """One request field as the page's form draws it: its kind, default, choices, help, and nested fields."""
    origin, args = get_origin(kind), get_args(kind)
    optional = origin in (Union, types.UnionType) and type(None) in args
    if optional:
        kind = next(a for a in args if a is not type(None))
        origin, args = get_origin(kind), get_args(kind)
    form: dict[str, Any] = {"optional": optional, "help": metadata.get("help", ""),
                            "flags": list(metadata.get("flags", ()))}
    if dataclasses.is_dataclass(kind):
        form.update(kind="group", fields=request_form(kind))
    elif origin is Literal:
        form.update(kind="choice", choices=list(args))
    elif origin is tuple and args and get_origin(args[0]) is tuple:
        form.update(kind="pairs")  # ablate's heads: ((layer, head), ...), written L.H,L.H
    elif origin is tuple:
        form.update(kind="list")
    else:
        form.update(kind={bool: "bool", int: "int", float: "float", str: "text"}.get(kind, "text"))
    if default is not dataclasses.MISSING and not dataclasses.is_dataclass(default):
        form["default"] = list(default) if isinstance(default, tuple) else default
    return form


def request_form(request: type) -> dict[str, Any]:
    """A request dataclass's fields, in order, each as `field_form` describes it."""
    hints = typing.get_type_hints(request)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(request):
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        out[f.name] = field_form(hints[f.name], default, f.metadata)
    return out


async def forms(request: Request) -> Response:
    """Every view's request fields, so the page builds its forms and reads its addresses by the route's names."""
    return _json({"views": [{"name": v.name, "short": v.short, "help": v.help, "needs": v.needs, "text": v.text,
                             "fields": request_form(v.request)} for v in VIEWS.values()]})


async def pieces(request: Request) -> Response:
    """`{"ids": [...]}` -> `{"texts": [...]}`: each id's text, as the views show a token."""
    state = state_of(request)
    body = await read_json(request, state.settings.max_body_bytes)
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or len(ids) > MAX_PIECES or any(
            isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise ApiError(f"the body must be {{\"ids\": [...]}} with at most {MAX_PIECES} whole numbers", param="ids")
    known = len(state.lm.tokenizer)  # the logits may be wider than the tokenizer (padded rows): those have no text
    vocab = max(known, getattr(state.lm.model.config, "vocab_size", 0) or 0)
    bad = next((i for i in ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise ApiError(f"token id {bad} is outside this model's vocabulary of {vocab:,}", param="ids")

    def texts() -> list[str]:
        return [token_text(state.lm.tokenizer, i) if i < known else "" for i in ids]

    return _json({"texts": await run_on_model(state, texts)})


def page_url(api_url: str) -> str:
    """The inspector's address for a server whose API is at `api_url` (`http://127.0.0.1:8765/v1` -> `.../`)."""
    return server_root(api_url) + "/"


def open_in_browser(api_url: str) -> None:
    """Open the inspector in the user's browser (`llm serve --open`); where there is none, say the address."""
    url = page_url(api_url)
    if not webbrowser.open(url):
        print(f"no browser to open here: the web inspector is at {url}", file=sys.stderr)


def web_routes() -> list[Route]:
    """The page, its files, and its two helper routes."""
    return [Route("/", page, methods=["GET"]),
            Route(STATIC + "{name}", static, methods=["GET"]),
            Route("/lookinside/v1/web/forms", forms, methods=["GET"]),
            Route("/lookinside/v1/web/pieces", pieces, methods=["POST"])]
