"""JSON over HTTP with the standard library, for the calls the openai client does not make (or should not pay for).

`call` GETs or POSTs JSON and turns every failure into one typed line: a refused key, a 4xx
with the server's own message (BadInput), nothing listening, an endpoint that is not a URL, bytes
that are not HTTP, or an answer that is not JSON.
Nothing here imports more than urllib.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from lookinside.core import errors
from lookinside.core.backends.remote_guard import DeadlinePassed, deadline


def server_root(url: str) -> str:
    """The server's root URL from a base URL that may end in /v1 (where its own routes live: /tokenize, /props...)."""
    return url.rstrip("/").removesuffix("/v1")


def call(root: str, path: str, key: str | None, body: Any, timeout_s: float, optional: bool = False,
         headers_seen: dict[str, str] | None = None, limit: int = -1) -> Any:
    """GET (no body) or POST JSON to the server; its answer's JSON, or one-line errors.

    With `optional`, a route the server does not have (a 4xx other than 401, or an answer that is not JSON) is None.
    `headers_seen` receives the answer's headers (lower-cased names); `limit` caps the bytes read.
    """
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body, allow_nan=False).encode()
        headers["Content-Type"] = "application/json"
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(root + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with deadline(timeout_s), urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            if headers_seen is not None:
                headers_seen.update((k.lower(), v) for k, v in response.headers.items())
            return json.loads(response.read(limit) or b"null")
    except DeadlinePassed:  # a server that drips: the socket's timeout is per read, this one is for the whole answer
        raise errors.RemoteError(f"the server at {root} did not answer within {timeout_s:g} s") from None
    except urllib.error.HTTPError as exc:
        if optional and 400 <= exc.code < 500 and exc.code != 401:
            return None
        raise _refusal(root, exc) from None
    except http.client.InvalidURL as exc:
        raise errors.BadInput(f"the endpoint {root!r} is not a valid URL ({str(exc).splitlines()[0]})") from None
    except http.client.HTTPException as exc:  # bytes that are not HTTP (BadStatusLine), or an answer cut short
        raise errors.RemoteError(f"the program at {root} does not answer in HTTP ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:80] if str(exc) else 'no status line'})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise errors.RemoteError(f"nothing answers at {root} ({reason}): is the server running?") from None
    except ValueError:
        if optional:
            return None
        raise errors.RemoteError(f"{root}{path} answered, but not with JSON") from None


def lines(root: str, path: str, key: str | None, body: Any, timeout_s: float) -> Iterator[Any]:
    """POST JSON to a route that answers one JSON object a line as it goes (a streamed chat reply); each object.

    The request is sent when the iterator is first advanced; a refusal (4xx) and a server that does not answer
    are `call`'s one-line errors; `timeout_s` bounds each wait for a line, not the whole answer.
    """
    request = urllib.request.Request(root + path, data=json.dumps(body, allow_nan=False).encode(), method="POST",
                                     headers={"Accept": "application/x-ndjson", "Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            for line in response:
                if line.strip():
                    yield json.loads(line)
    except urllib.error.HTTPError as exc:
        raise _refusal(root, exc) from None
    except http.client.HTTPException as exc:
        raise errors.RemoteError(f"the server at {root} cut its answer short ({type(exc).__name__})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise errors.RemoteError(f"nothing answers at {root} ({reason}): is the server running?") from None
    except ValueError:
        raise errors.RemoteError(f"{root}{path} answered a line that is not JSON") from None


def _refusal(root: str, exc: urllib.error.HTTPError) -> errors.LookinsideError:
    """The server's one-line error as the typed error the CLI turns into its exit code."""
    try:
        message = str(json.loads(exc.read())["error"]["message"]).splitlines()[0]
    except (ValueError, KeyError, TypeError, IndexError):
        message = exc.reason or "no reason given"
    if 300 <= exc.code < 400:  # urllib gives up on a loop with a three-line message of its own
        where = exc.headers.get("Location") if exc.headers else None
        return errors.RemoteError(f"the server at {root} redirects in a loop ({exc.code} to {where or 'itself'}): "
                                  "give the URL it answers at")
    if exc.code == 401:
        return errors.RemoteError(f"the server at {root} refused the API key (401): give --api-key or set "
                                  "LOOKINSIDE_API_KEY")
    if 400 <= exc.code < 500 and exc.code != 404:
        return errors.BadInput(f"the server refused the request: {message}")
    return errors.RemoteError(f"the server at {root} answered {exc.code}: {message}")
