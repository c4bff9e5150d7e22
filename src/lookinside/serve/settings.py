"""What a server was told at start: where to listen, its key, and its limits (plain data, no torch)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lookinside.core.errors import BadInput
from lookinside.core.model.spec import LoadSpec

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765  # beside vLLM's 8000 and Ollama's 11434, so all three can run on one machine
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs, so a client sees the same limit from both
KEY_ENV = "LOOKINSIDE_SERVE_KEY"


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
    grace_s: float = 5.0  # on SIGTERM, how long replies in flight may go on before they are cut

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

    @property
    def url(self) -> str:
        """The base URL clients use (a wildcard host is reached through the loopback address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "[::1]" if self.host == "::" else self.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}/v1"


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
