"""Connections the server can afford: a deadline on reading each request, and a cap on how many are open.

uvicorn closes a kept-alive connection that sits idle, but not one that sends half a request and
waits (slowloris): each such connection holds a file descriptor until the process runs out, and
then asyncio logs a traceback for every accept it cannot make. `GuardedH11Protocol` is uvicorn's
h11 protocol with two changes:

- a request's headers and body must arrive within `read_timeout_s` of its first byte (or of the
  connection, for the first request); a slower one is closed;
- with `cap` connections open, a new one closes the oldest connection that is not being answered
  (reading a request, or idle between two), so /health still answers; when every one is being
  answered, the new one is told 503 and closed.

`cap` is also kept to half the descriptors the process has left (`affordable_connections`), so
accept() does not fail for want of one (asyncio then stops accepting for a second, and logs it).
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

ACCEPT_BURST = 64  # asyncio accepts up to `backlog` sockets at once (uvicorn's default, 2048, took every descriptor)
SPARE_DESCRIPTORS = 64  # for the model's files, the log, the worker: what the process needs besides connections
_BUSY_BODY = b'{"error":{"message":"too many open connections: retry in a moment","type":"server_busy",' \
             b'"param":null,"code":503}}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"retry-after: 1\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


def affordable_connections(wanted: int) -> int:
    """`wanted`, lowered to fit the descriptors this process may open (the soft limit raised to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536),
                                                        hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 32
    # Half of what is left: asyncio accepts a burst of sockets before any of them is counted here, and the
    # connections closed to make room give back their descriptors only on the loop's next turn.
    return max(8, min(wanted, (soft - open_now - SPARE_DESCRIPTORS) // 2))


def guarded_protocol(read_timeout_s: float, cap: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with this server's read deadline and connection cap."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"read_timeout_s": read_timeout_s, "cap": cap})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request and a cap on open connections."""

    read_timeout_s: float = 10.0
    cap: int = 256

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.opened = time.monotonic()
        self.read_deadline: asyncio.TimerHandle | None = None
        self.refused = len(self.connections) >= self.cap and not self._make_room()
        if self.refused:
            transport.write(BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def _make_room(self) -> bool:
        """Close the oldest connection that is not being answered; False when every one is."""
        idle = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and not c.answering]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.opened)
        oldest.close_now()
        self.connections.discard(oldest)  # connection_lost comes later, on the next loop turn
        return True

    @property
    def answering(self) -> bool:
        """A request has come in whole and its answer is not finished."""
        return self.cycle is not None and not self.cycle.response_complete and self.conn.their_state is h11.DONE

    def close_now(self) -> None:
        """Close the connection without an answer (it had not sent a whole request)."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.DONE or self.transport.is_closing():
            self._disarm()  # the request is in: its answer may take as long as the model needs
        elif self.read_deadline is None:
            self._arm()  # the first byte of a request on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return  # it never became a connection
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is not h11.DONE and not self.transport.is_closing():
            self._arm()  # a pipelined request already started

    def _arm(self) -> None:
        self._disarm()
        self.read_deadline = self.loop.call_later(self.read_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _too_slow(self) -> None:
        self.read_deadline = None
        if self.conn.their_state is not h11.DONE and (self.cycle is None or self.cycle.response_complete
                                                      or not self.cycle.response_started):
            self.close_now()


def protocol_options(settings: Any) -> dict[str, Any]:
    """uvicorn.Config's options for `settings`: this protocol, and keep-alive shorter than the read deadline."""
    cap = affordable_connections(settings.max_connections)
    return {"http": guarded_protocol(settings.read_timeout_s, cap), "timeout_keep_alive": 5,
            "h11_max_incomplete_event_size": 16 * 1024, "backlog": ACCEPT_BURST}
