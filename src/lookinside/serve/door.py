"""The server's door: every request passes here first, and only a request the server should answer goes in.

One ASGI middleware, in this order, each refusal one line and before the body is read:

1. Host: the request must name this server (127.0.0.1, localhost or [::1] with its port, the bound
   address, or a name given with --allow-host); a page on a name rebound to this machine (DNS
   rebinding) sends its own name and is refused 403.
2. Origin: a browser says which page sent the request; only the server's own pages and the origins
   given with --allow-origin or $LOOKINSIDE_ORIGINS are let in (403 otherwise); a request without an
   Origin (curl, the openai client, llm) is not a browser's. A preflight (OPTIONS) is answered only
   for an allowed origin.
3. The key, when the server has one (every path but /health and /lookinside/v1/whoami).
4. A POST must say its body is JSON (415 otherwise): a page can send text/plain without a preflight.

Whatever the app then raises that no route answered becomes one 500 line with an id; the log gets
that line too, and the traceback only with --debug.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookinside.serve.openai_api import ApiError
from lookinside.serve.settings import ServeSettings

log = logging.getLogger("lookinside.serve")
HEALTH_PATH = "/health"
WHOAMI_PATH = "/lookinside/v1/whoami"
OPEN_PATHS = (HEALTH_PATH, WHOAMI_PATH)  # answered without the key: waiting for the server, and its proof of identity
JSON_TYPES = ("application/json",)
CORS_HEADERS = {"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type", "Access-Control-Max-Age": "600"}


class Door:
    """Refuse what is not for this server: a foreign Host or Origin, a missing key, a POST that is not JSON."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, also_open: Callable[[str], bool] = lambda path: False
                 ) -> None:
        self.app = app
        self.settings = settings
        self.also_open = also_open  # the web page's files: the page asks for the key itself, for its requests
        self.named: dict[int, tuple[frozenset[str], frozenset[str]]] = {}  # by the port a request came to
        self.key = settings.api_key.encode() if settings.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1").strip().lower() or None
        refusal = self.refusal(scope, headers, origin)
        if refusal is not None:
            await reply(refusal, scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and origin is not None:
            await Response(status_code=204, headers={"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                                                     **CORS_HEADERS})(scope, receive, send)
            return
        await self.answer(scope, receive, send, origin)

    def refusal(self, scope: Scope, headers: dict[bytes, bytes], origin: str | None) -> ApiError | None:
        """Why this request is refused at the door, or None."""
        hosts, origins = self.names(scope)
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        if host and not self.settings.any_host and host not in hosts:
            return ApiError(f"the Host {host!r} does not name this server (a page on another name, rebound to this "
                            "machine?): call it as 127.0.0.1 or localhost, or allow the name with --allow-host",
                            status=403, kind="forbidden_host")
        same_origin = origin == f"http://{host}"  # a page this server served, under a Host checked above
        if origin is not None and not same_origin and origin not in origins and "*" not in origins:
            return ApiError(f"requests from the web page at {origin} are refused: start the server with "
                            "--allow-origin ORIGIN (or set LOOKINSIDE_ORIGINS) to let a page in",
                            status=403, kind="forbidden_origin")
        if scope["method"] == "OPTIONS" and origin is not None:
            return None  # a preflight carries no key: the browser sends it on the request that follows
        page = scope["method"] == "GET" and self.also_open(scope["path"])
        if self.key is not None and scope["path"] not in OPEN_PATHS and not page and not self._keyed(headers):
            return ApiError("the API key is missing or wrong", status=401, kind="authentication_error")
        media = headers.get(b"content-type", b"").decode("latin-1").partition(";")[0].strip().lower()
        if scope["method"] == "POST" and media not in JSON_TYPES:
            return ApiError(f"a POST's body must be JSON, sent with Content-Type: application/json, not "
                            f"{media or 'none'!r}", status=415, kind="unsupported_media_type")
        return None

    def names(self, scope: Scope) -> tuple[frozenset[str], frozenset[str]]:
        """(Hosts, origins) that name this server on the port the request came to (the socket's, not a setting)."""
        port = int((scope.get("server") or (None, self.settings.port))[1] or self.settings.port)
        if port not in self.named:
            self.named[port] = (self.settings.own_hosts(port), self.settings.own_origins(port))
        return self.named[port]

    def _keyed(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key or b"")

    async def answer(self, scope: Scope, receive: Receive, send: Send, origin: str | None) -> None:
        """The app's answer (with CORS headers for an allowed page); an error no route answered is one line."""
        started = False

        async def send_marked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if origin is not None:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"access-control-allow-origin", origin.encode("latin-1")),
                                                      (b"vary", b"Origin")]}
            await send(message)

        try:
            await self.app(scope, receive, send_marked)
        except Exception as exc:  # noqa: BLE001 (the door is the last place an error can become one line)
            error = unexpected(exc, self.settings.debug)
            if not started:
                await reply(error, scope, receive, send)


def unexpected(exc: BaseException, debug: bool) -> ApiError:
    """A bug's answer: one 500 line with an id, logged as one line (with the traceback under --debug)."""
    error_id = secrets.token_hex(4)
    first = (str(exc).splitlines() or [""])[0][:200]
    log.error("error %s: %s: %s%s", error_id, type(exc).__name__, first, "" if debug else " (--debug logs the traceback)",
              exc_info=exc if debug else None)
    return ApiError(f"internal error {error_id} ({type(exc).__name__}): a bug in lookinside's server", status=500,
                    kind="server_error")


async def reply(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    """Send `error` as the one-line JSON answer."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    await json_response(error.body(), error.status, headers)(scope, receive, send)


def dumps(data: Any) -> bytes:
    """Strict, compact JSON (no NaN), as every answer is written."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer."""
    return Response(dumps(data), status_code=status, headers=headers, media_type="application/json")
