"""What a remote backend checks before it trusts: its settings, the server's time, and the server's numbers.

- `timeout_from_env()`: LOOKINSIDE_TIMEOUT as a positive, finite number of seconds, or one line.
- `check_endpoint(url)`: an http(s) URL with a host, that parses (`http://[::1` does not).
- `deadline(seconds)`: the openai client's timeout is httpx's, which applies to each read, so a
  server that sends one byte a second never trips it. This context manager bounds the whole
  wait (a request, or the wait for the next streamed chunk) with a real-time timer (SIGALRM); it
  raises `DeadlinePassed`, a BaseException, so that no library's `except Exception` retries it.
  Only in the main thread on POSIX, and only when no other timer is armed; elsewhere the per-read
  timeout is what remains.
- `logprob(value, token)`: a server's log-probability, refused in one line unless it is a number
  <= 0 (a rounding error up to 1e-3 above 0 is read as 0).
- `model_ids(served, url)`: /v1/models's entries as ids, or one line when they are not models.

Nothing here imports torch or openai.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from lookinside.core import errors

DEFAULT_TIMEOUT_S = 60.0
ROUNDING = 1e-3  # a log-probability this far above 0 is a server's rounding, read as 0


class DeadlinePassed(BaseException):
    """The whole wait took longer than the timeout (raised from the SIGALRM handler)."""


def timeout_from_env() -> float:
    """LOOKINSIDE_TIMEOUT in seconds (60 when unset): a positive, finite number, or a one-line BadInput."""
    text = os.environ.get("LOOKINSIDE_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise errors.BadInput(f"LOOKINSIDE_TIMEOUT must be a positive number of seconds, such as 60, not {text!r}")
    return value


def check_endpoint(url: str) -> None:
    """Refuse, in one line, an endpoint that is not an http(s) URL with a host."""
    if not url.startswith(("http://", "https://")):
        raise errors.BadInput(f"--endpoint must be an http:// or https:// URL, not {url!r}")
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises for a port that is not a number
    except ValueError as exc:
        raise errors.BadInput(f"--endpoint {url!r} is not a valid URL ({exc})") from None
    if not host:
        raise errors.BadInput(f"--endpoint {url!r} names no host: give one, e.g. http://127.0.0.1:8000/v1")


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise DeadlinePassed in this thread if the block is still running after `seconds` (see the module docstring)."""
    usable = (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))
    if not usable:
        yield
        return

    def passed(signum: int, frame: object) -> None:
        raise DeadlinePassed

    previous = signal.signal(signal.SIGALRM, passed)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def logprob(value: Any, token: str) -> float:
    """A server's log-probability as a float <= 0; anything else is a one-line RemoteError before it is drawn."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and (value <= 0 or (math.isfinite(value) and value <= ROUNDING)):
        return min(float(value), 0.0)
    raise errors.RemoteError(f"the server sent a log-probability of {value!r} for the token {token!r}: "
                             "a log-probability is a number <= 0, so lookinside will not draw it")


def model_ids(served: Any, url: str) -> list[tuple[str, Any]]:
    """(id, entry) for each model /v1/models lists; a one-line RemoteError when it is not a list of models."""
    entries = list(served) if isinstance(served, (list, tuple)) else None
    ids = [getattr(m, "id", None) if not isinstance(m, dict) else m.get("id") for m in entries or []]
    if entries is None or not all(isinstance(i, str) and i for i in ids):
        raise errors.RemoteError(f"{url}/models did not list models as an OpenAI-compatible server does "
                                 "(each with an \"id\")")
    return list(zip(ids, entries))


def context_length(entry: Any) -> int | None:
    """A model entry's max_model_len when it is a positive whole number; None otherwise (not a guess)."""
    value = entry.get("max_model_len") if isinstance(entry, dict) else getattr(entry, "max_model_len", None)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = int(value)
    except (ValueError, OverflowError):
        return None
    return number if number > 0 and number == float(value) else None
