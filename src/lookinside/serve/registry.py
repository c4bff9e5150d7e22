"""A running `llm serve` records itself here, so that a command with the same model options uses it.

One JSON file per server in `<data dir>/servers/`, readable by its owner only (mode 0600: it
holds the API key). A record whose process is gone is stale: `find_server` ignores and removes
it. Nothing here imports torch, transformers, openai or the HTTP stack: every command asks
`find_server` before loading a model, so it must cost next to nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lookinside.core.model.spec import LoadSpec
from lookinside.core.paths import data_dir

NO_SERVER_ENV = "LOOKINSIDE_NO_SERVER"
# LoadSpec fields that do not change what the model computes: a server loaded with other ones still matches.
NOT_IDENTITY = ("threads", "model_named")


@dataclass(frozen=True)
class ServerRecord:
    """One running server: where it answers, what it loaded, its process and its key (never printed)."""

    url: str  # the base URL, ending in /v1
    pid: int
    model: str  # the served model's id
    spec: dict[str, Any]  # the LoadSpec's fields, as JSON writes them
    key: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The record as its file holds it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerRecord:
        """A record from its file's object (a malformed one raises ValueError)."""
        try:
            return cls(url=str(data["url"]), pid=int(data["pid"]), model=str(data["model"]), spec=dict(data["spec"]),
                       key=data.get("key"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a server record ({exc})") from None


def servers_dir() -> Path:
    """Where running servers record themselves."""
    return data_dir() / "servers"


def spec_identity(spec: LoadSpec) -> dict[str, Any]:
    """The LoadSpec fields that choose the model and how it computes, as JSON gives them back."""
    fields = {k: v for k, v in asdict(spec).items() if k not in NOT_IDENTITY}
    return json.loads(json.dumps(fields))


def write_record(record: ServerRecord) -> Path:
    """Write `record` atomically, readable by its owner only; the path (to remove on exit)."""
    folder = servers_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.pid}.json"
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record.to_json(), out)
    os.replace(partial, path)
    return path


def remove_record(path: Path) -> None:
    """Remove a record; one already gone is fine."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def running_servers() -> list[tuple[Path, ServerRecord]]:
    """The records of live servers; stale and unreadable ones are removed on the way."""
    folder = servers_dir()
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = ServerRecord.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            remove_record(path)
            continue
        if not _alive(record.pid):
            remove_record(path)
            continue
        found.append((path, record))
    return found


def find_server(spec: LoadSpec) -> ServerRecord | None:
    """A live server that loaded the model `spec` names the same way (device, dtype...), or None."""
    if os.environ.get(NO_SERVER_ENV, "").strip() not in ("", "0"):
        return None
    wanted = spec_identity(spec)
    for _, record in running_servers():
        if {k: v for k, v in record.spec.items() if k not in NOT_IDENTITY} == wanted and _listening(record.url):
            return record
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def _listening(url: str, timeout_s: float = 0.5) -> bool:
    """True when something accepts connections at the URL's host and port (a reused pid is not a server)."""
    import socket  # only once a record is found: a command with no server running pays nothing for it
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), timeout=timeout_s):
            return True
    except OSError:
        return False
