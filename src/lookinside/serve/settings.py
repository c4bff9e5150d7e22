"""What a server was told at start: where to listen, its key, who may call it, and its limits (plain data, no torch)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lookinside.core.errors import BadInput
from lookinside.core.model.spec import LoadSpec

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765  # beside vLLM's 8000 and Ollama's 11434, so all three can run on one machine
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs, so a client sees the same limit from both
KEY_ENV = "LOOKINSIDE_SERVE_KEY"
ORIGINS_ENV = "LOOKINSIDE_ORIGINS"  # comma-separated origins a browser page may call the server from, as OLLAMA_ORIGINS
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
DECODERS = ("auto", "process", "thread")


@dataclass(frozen=True)
class ServeSettings:
    """How the server listens and what it accepts; checked on creation."""

    spec: LoadSpec = field(default_factory=LoadSpec)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (the record and the first line say which)
    api_key: str | None = field(default=None, repr=False)
    queue: int = 32  # requests that may wait for the model; one more is answered 503
    max_tokens: int | None = None  # the most tokens one request may generate (None: the context)
    max_logprobs: int = MAX_LOGPROBS
    max_body_bytes: int = 1_000_000
    grace_s: float = 1.0  # on SIGTERM, jobs are cut at once; this is how long their answers may take to go out
    allow_origins: tuple[str, ...] = ()  # browser origins allowed beside the server's own ("*": any)
    allow_hosts: tuple[str, ...] = ()  # Host names allowed beside loopback and the bound address
    read_timeout_s: float = 10.0  # a request's headers and body must arrive within this from its first byte
    max_connections: int = 256  # open connections; past it the oldest that is not being answered is closed
    debug: bool = False  # log an unexpected error's traceback, not only its one line
    # Where the batch decodes: "thread" (the model's thread), "process" (a process of its own, serve/decoder.py) or
    # "auto" (a process where the model can share its weights with one: `llm serve`'s default).
    decoder: str = "thread"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise BadInput(f"--port must be in [0, 65535], not {self.port}")
        if self.queue < 1:
            raise BadInput(f"--queue must be at least 1, not {self.queue}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise BadInput(f"--max-tokens must be at least 1, not {self.max_tokens}")
        if not 0 <= self.max_logprobs <= 100:
            raise BadInput(f"--max-logprobs must be in [0, 100], not {self.max_logprobs}")
        if self.max_body_bytes < 1024:
            raise BadInput(f"--max-body must be at least 1024 bytes, not {self.max_body_bytes}")
        if self.api_key is not None and not self.api_key.strip():
            raise BadInput("--api-key is empty")
        if not is_loopback(self.host) and not self.api_key:
            raise BadInput(f"--host {self.host} lets other machines in: give --api-key (or set {KEY_ENV}) too")
        object.__setattr__(self, "allow_origins", tuple(origin(o) for o in self.allow_origins))
        object.__setattr__(self, "allow_hosts", tuple(h.strip().lower() for h in self.allow_hosts if h.strip()))
        if not 0 < self.read_timeout_s <= 3600:
            raise BadInput(f"--read-timeout must be in (0, 3600] seconds, not {self.read_timeout_s}")
        if self.decoder not in DECODERS:
            raise BadInput(f"--decoder must be one of {', '.join(DECODERS)}, not {self.decoder!r}")
        if not 8 <= self.max_connections <= 65536:
            raise BadInput(f"--max-connections must be in [8, 65536], not {self.max_connections}")

    @property
    def url(self) -> str:
        """The base URL clients use (a wildcard host is reached through the loopback address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "[::1]" if self.host == "::" else self.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}/v1"


    def own_hosts(self, port: int | None = None) -> frozenset[str]:
        """The Host headers that name this server on `port` (default: --port): loopback and the bound address, with
        the port (or none), and the names allowed."""
        names = {*LOOPBACK_NAMES, self.host.lower()}
        names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
        return frozenset({*(f"{n}:{port or self.port}" for n in names), *LOOPBACK_NAMES, *self.allow_hosts})

    def own_origins(self, port: int | None = None) -> frozenset[str]:
        """The origins of this server's own pages on `port` (the web inspector at /), and those the user allowed."""
        own = {f"http://{host}" for host in self.own_hosts(port) if host.endswith(f":{port or self.port}")}
        return frozenset(own | set(self.allow_origins))

    @property
    def any_host(self) -> bool:
        """Bound to every address (0.0.0.0, ::): other machines name it as they like; the key guards it."""
        return self.host in ("0.0.0.0", "::", "")


def origin(text: str) -> str:
    """An origin as a browser sends it (`scheme://host[:port]`, lower case), or `*` for any; one line if not."""
    text = text.strip().rstrip("/").lower()
    if text == "*":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or "@" in parts.netloc:
        raise BadInput(f"an allowed origin is scheme://host[:port], such as http://localhost:3000, not {text!r}")
    return f"{parts.scheme}://{parts.netloc}"


def origins_from_env() -> tuple[str, ...]:
    """The origins named in $LOOKINSIDE_ORIGINS (comma-separated), as given."""
    return tuple(o for o in os.environ.get(ORIGINS_ENV, "").split(",") if o.strip())


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
