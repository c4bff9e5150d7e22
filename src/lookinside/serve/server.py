"""Run the app under uvicorn: bind first, load once, record the server, and leave cleanly.

The socket is bound before the model loads, so a port in use is one line at once, not after a
minute of loading. Once uvicorn listens, the server records itself (serve/registry.py) and says
where it is in one line on stderr. SIGTERM, SIGINT (Ctrl-C) or SIGHUP (the terminal closed) stops
taking requests and cuts every job at its next forward pass at once; a streamed reply ends with an
error event and `[DONE]`, one that was not streamed with a 503; the record is removed and the
process exits 0. Connections are read under a deadline and capped (serve/connections.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import uvicorn

from lookinside.core import errors
from lookinside.serve.connections import protocol_options
from lookinside.serve.registry import RegistryError, ServerRecord, remove_record, spec_identity, write_record
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
    from lookinside.serve.app import create_app  # deferred: starlette

    port = sock.getsockname()[1]
    settings = ServeSettings(**{**_fields(settings), "port": port})
    app = create_app(lm, settings)
    app.state.lookinside.info["started"] = time.time()
    # asyncio's own loop, even where uvloop is installed: its socket writes let go of the GIL, which the model's
    # thread needs between its kernels; uvloop writes holding it, and 16 and 32 streaming clients got 0.8-0.9x
    # the tokens/s (tiny, docs/serve.md).
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=settings.grace_s,
                            lifespan="on", server_header=False, loop="asyncio", **protocol_options(settings))
    quiet_logs()
    server = _Server(config, app, lm, settings, say)
    server.on_ready = on_ready
    try:
        server.run(sockets=[sock])
    finally:
        app.state.lookinside.worker.close()
        if server.record_path is not None:
            remove_record(server.record_path)
        sock.close()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
        state = self.app.state.lookinside
        record = ServerRecord(self.settings.url, os.getpid(), self.lm.name, spec_identity(self.settings.spec),
                              self.settings.api_key, state.nonce.hex())
        try:
            self.record_path = write_record(record)
        except RegistryError as exc:
            self.say(f"note: not recorded, so commands will not find this server: {exc}")
        if state.worker.decoder is not None:
            self.say(f"the batch decodes in a process of its own (pid {state.worker.decoder.pid}), sharing the "
                     "model's weights")
        elif (where := state.info.get("decoder", "thread")) != "thread":
            self.say(f"the batch decodes on the model's {where}")  # and why "auto" chose it
        locked = " (an API key is required)" if self.settings.api_key else ""
        self.say(f"serving {self.lm.name} at {self.settings.url}{locked}; pid {os.getpid()}; Ctrl-C stops it")
        if self.on_ready is not None:
            self.on_ready(self.settings.url)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM, SIGINT and SIGHUP stop the server (uvicorn's own catches no SIGHUP, and re-raises the signal
        once done, which would kill the process before it exits 0)."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            self.say(f"stopping ({signal.Signals(sig).name}): jobs are cut at their next step")
        self.should_exit = True
        self.app.state.lookinside.worker.closing.set()


def _fields(settings: ServeSettings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}


def exit_now() -> None:
    """Exit 0 at once, once `serve` has returned: every answer is sent and the record removed, and the interpreter's
    own teardown (torch's, measured at 3 s for the tiny model) would only keep a stopping server around."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def quiet_logs() -> None:
    """asyncio logs a failed accept() or a reset connection with a traceback each, and uvicorn each request that is
    not HTTP: one line per kind is enough, or a client could fill the log."""
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(_OncePerKind())


class _OncePerKind(logging.Filter):
    """Let each distinct message through once, without its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)[:80]
        if message in self.seen:
            return False
        self.seen.add(message)
        record.exc_info, record.exc_text = None, None
        return True


def quiet_libraries() -> None:
    """transformers' per-request warnings (a long prompt) are the client's business, answered as 400s."""
    import transformers

    transformers.logging.set_verbosity_error()
