"""Run the app under uvicorn: bind first, load once, record the server, and leave cleanly.

The socket is bound before the model loads, so a port in use is one line at once, not after a
minute of loading. Once uvicorn listens, the server records itself (serve/registry.py) and says
where it is in one line on stderr. SIGTERM or Ctrl-C stops taking requests; replies in flight may
finish for `grace_s` seconds, then every generation is cut at its next token; the record is removed
and the process exits 0. A second Ctrl-C cuts at once.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from lookinside.core import errors
from lookinside.serve.registry import ServerRecord, remove_record, spec_identity, write_record
from lookinside.serve.settings import ServeSettings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from lookinside.core.model.loading import LM


def bind(settings: ServeSettings) -> socket.socket:
    """A listening socket on the host and port (port 0: any free one), or a one-line error."""
    try:
        family, kind, proto, _, _ = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0]
        # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP,
        # and with Nagle on, a keep-alive client waited 40 ms (the delayed ACK) for each response's body.
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(2048)
    except OSError as exc:
        raise errors.BadInput(f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); "
                              "choose another --port") from None
    sock.set_inheritable(True)
    return sock


def serve(lm: LM, settings: ServeSettings, sock: socket.socket, say: Callable[[str], None],
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve `lm` on `sock` until SIGTERM or Ctrl-C; returns once everything in flight is finished or cut.

    `on_ready(url)` is called once the server listens (`llm serve --open` opens the web inspector there).
    """
    from lookinside.serve.app import create_app

    port = sock.getsockname()[1]
    settings = ServeSettings(**{**_fields(settings), "port": port})
    app = create_app(lm, settings)
    app.state.lookinside.info["started"] = time.time()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=settings.grace_s,
                            lifespan="on", server_header=False)
    server = _Server(config, app, lm, settings, say)
    server.on_ready = on_ready
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])  # uvicorn re-raises the signal it caught when it is done: ignored above
    finally:
        app.state.lookinside.worker.close()
        if server.record_path is not None:
            remove_record(server.record_path)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


class _Server(uvicorn.Server):
    """uvicorn's server, which records itself once it listens and cuts generations after the grace time."""

    def __init__(self, config: uvicorn.Config, app: Starlette, lm: LM, settings: ServeSettings,
                 say: Callable[[str], None]) -> None:
        super().__init__(config)
        self.app, self.lm, self.settings, self.say = app, lm, settings, say
        self.record_path = None
        self.on_ready: Callable[[str], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        record = ServerRecord(self.settings.url, os.getpid(), self.lm.name, spec_identity(self.settings.spec),
                              self.settings.api_key)
        self.record_path = write_record(record)
        locked = " (an API key is required)" if self.settings.api_key else ""
        self.say(f"serving {self.lm.name} at {self.settings.url}{locked}; pid {os.getpid()}; Ctrl-C stops it")
        if self.on_ready is not None:
            self.on_ready(self.settings.url)

    def handle_exit(self, sig: int, frame: Any) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        closing = self.app.state.lookinside.worker.closing
        if self.force_exit:
            closing.set()
        elif first:
            self.say(f"stopping: replies in flight may finish for {self.settings.grace_s:g} s")
            timer = threading.Timer(self.settings.grace_s, closing.set)
            timer.daemon = True
            timer.start()


def _fields(settings: ServeSettings) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(settings, f.name) for f in fields(settings)}


def quiet_libraries() -> None:
    """transformers' per-request warnings (a long prompt) are the client's business, answered as 400s."""
    import transformers

    transformers.logging.set_verbosity_error()
