"""A running `llm serve` records itself here, so that a command with the same model options uses it.

One JSON file per server, `<data dir>/servers/PID.json`, readable by its owner only (it holds the
API key). Nothing another user wrote is trusted, as OpenSSH trusts no key file others could change:

- the folder is used only when it is a real directory owned by this user and writable by no one
  else (else one note says why, and the command runs here);
- a record is read only when it is a regular file owned by this user, mode 0600, opened without
  following a link and without blocking (a FIFO cannot hang a command), and small;
- its URL must be http on a loopback address with a port in range, and its pid its file's name;
- it is written under a fresh name with O_EXCL|O_NOFOLLOW and renamed into place, so a planted
  link receives nothing;
- before the key is sent, the server proves it is the recorded one: `GET /lookinside/v1/whoami`
  answers its pid and an HMAC of a fresh challenge under the nonce that only the record holds.

A stale record (its process gone, or not proving itself) is removed; a bad one is removed or
ignored with one note. Nothing here imports torch, transformers, openai or the HTTP stack until a
record is found: every command asks `find_server` before loading a model, so it must cost next to nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lookinside.core.model.spec import LoadSpec
from lookinside.core.paths import data_dir, not_ours_alone
from lookinside.serve.settings import is_loopback

NO_SERVER_ENV = "LOOKINSIDE_NO_SERVER"
# LoadSpec fields that do not change what the model computes: a server loaded with other ones still matches.
NOT_IDENTITY = ("threads", "model_named")
RECORD_NAME = re.compile(r"^([0-9]{1,10})\.json$")
MAX_RECORD_BYTES = 64 * 1024
WHOAMI_PATH = "/lookinside/v1/whoami"


class RegistryError(Exception):
    """The records' folder cannot be trusted or written (the message says why, in one line)."""


@dataclass(frozen=True)
class ServerRecord:
    """One running server: where it answers, what it loaded, its process, its key and nonce (never printed)."""

    url: str  # the base URL, ending in /v1, on a loopback address
    pid: int
    model: str  # the served model's id
    spec: dict[str, Any]  # the LoadSpec's fields, as JSON writes them
    key: str | None = field(default=None, repr=False)
    nonce: str = field(default="", repr=False)  # hex; the server proves it knows it (serve/app.py's whoami)

    def to_json(self) -> dict[str, Any]:
        """The record as its file holds it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ServerRecord:
        """A record from its file's object; ValueError (one line) when it is not a well-formed, loopback record."""
        try:
            record = cls(url=str(data["url"]), pid=int(data["pid"]), model=str(data["model"]), spec=dict(data["spec"]),
                         key=None if data.get("key") is None else str(data["key"]), nonce=str(data.get("nonce", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a server record ({type(exc).__name__}: {exc})") from None
        loopback_url(record.url)
        if not re.fullmatch(r"[0-9a-f]{32,128}", record.nonce):
            raise ValueError("the record has no nonce to prove its server by")
        return record


def loopback_url(url: str) -> tuple[str, int]:
    """(host, port) of an http URL on a loopback address; ValueError otherwise (a record must not send us away)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"the URL {url[:80]!r} is not valid ({exc})") from None
    host = parts.hostname or ""
    if parts.scheme != "http" or not is_loopback(host) or port is None or not 0 < port < 65536:
        raise ValueError(f"the URL {url[:80]!r} is not http on a loopback address and port")
    return host, port


def servers_dir() -> Path:
    """Where running servers record themselves."""
    return data_dir() / "servers"


def spec_identity(spec: LoadSpec) -> dict[str, Any]:
    """The LoadSpec fields that choose the model and how it computes, as JSON gives them back."""
    fields = {k: v for k, v in asdict(spec).items() if k not in NOT_IDENTITY}
    return json.loads(json.dumps(fields))


def open_folder(create: bool = False) -> int | None:
    """A descriptor of the records' folder, checked to be ours alone; None when it does not exist (and not `create`).

    Raises RegistryError when another user owns it or can write to it, or it is not a directory.
    """
    folder = servers_dir()
    if create:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise RegistryError(f"cannot make {folder} ({exc.strerror or exc})") from None
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"{folder} is not a directory of this user's ({exc.strerror or exc})") from None
    problem = not_ours_alone(os.fstat(fd), fix="chmod 700 it")
    if problem:
        os.close(fd)
        raise RegistryError(f"the server records in {folder} are not used: {problem}")
    return fd


def write_record(record: ServerRecord) -> Path:
    """Write `record` under a fresh name (O_EXCL, no link followed, mode 0600) and rename it into place; its path."""
    try:
        loopback_url(record.url)
    except ValueError as exc:
        raise RegistryError(f"commands look only for servers on loopback: {exc}") from None
    folder_fd = open_folder(create=True)
    assert folder_fd is not None  # created above
    name = f"{record.pid}.json"
    partial = f".{record.pid}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=folder_fd)
        with os.fdopen(fd, "w") as out:
            json.dump(record.to_json(), out)
        os.replace(partial, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except OSError as exc:
        raise RegistryError(f"cannot write {servers_dir() / name} ({exc.strerror or exc})") from None
    finally:
        os.close(folder_fd)
    return servers_dir() / name


def remove_record(path: Path) -> None:
    """Remove a record; one already gone is fine."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@dataclass
class Found:
    """What the folder holds: the live servers' records, and one note per record (or folder) passed over."""

    records: list[tuple[Path, ServerRecord]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def running_servers() -> Found:
    """The records of live servers; stale ones are removed, bad ones removed or ignored, each with a note."""
    found = Found()
    try:
        folder_fd = open_folder()
    except RegistryError as exc:
        found.notes.append(str(exc))
        return found
    if folder_fd is None:
        return found
    try:
        for name in sorted(os.listdir(folder_fd)):
            matched = RECORD_NAME.match(name)
            if matched is None:
                continue
            try:
                record = ServerRecord.from_json(json.loads(_read_own_file(folder_fd, name)))
                if record.pid != int(matched.group(1)):
                    raise ValueError(f"it names pid {record.pid}")
            except _NotOurs as exc:
                found.notes.append(f"ignored the server record {servers_dir() / name}: {exc}")
                continue
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                found.notes.append(f"removed the bad server record {servers_dir() / name}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                _unlink(folder_fd, name)
                continue
            if not _alive(record.pid):
                _unlink(folder_fd, name)  # the server was killed: a stale record says nothing worth a note
                continue
            found.records.append((servers_dir() / name, record))
    finally:
        os.close(folder_fd)
    return found


class _NotOurs(Exception):
    """A file in the folder that this user did not write: not read, not removed."""


def _read_own_file(folder_fd: int, name: str) -> str:
    """The text of a regular file of ours, mode 0600 or stricter, opened without following links or blocking."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder_fd)
    except OSError as exc:
        raise _NotOurs(f"cannot open it without following a link ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotOurs("not a regular file")
        if info.st_uid != os.geteuid():
            raise _NotOurs(f"it belongs to uid {info.st_uid}, not to you")
        if info.st_mode & 0o077:
            raise ValueError(f"others may read it (mode {stat.S_IMODE(info.st_mode):o})")
        if info.st_size > MAX_RECORD_BYTES:
            raise ValueError(f"{info.st_size:,} bytes is too large for a record")
        return os.read(fd, MAX_RECORD_BYTES + 1).decode("utf-8")
    finally:
        os.close(fd)


def _unlink(folder_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except OSError:
        pass


def find_server(spec: LoadSpec) -> tuple[ServerRecord | None, list[str]]:
    """A live server that loaded the model `spec` names the same way (device, dtype...) and proved it is the one
    recorded, or None; with the notes on what was passed over."""
    if os.environ.get(NO_SERVER_ENV, "").strip() not in ("", "0"):
        return None, []
    wanted = spec_identity(spec)
    found = running_servers()
    for path, record in found.records:
        if {k: v for k, v in record.spec.items() if k not in NOT_IDENTITY} != wanted:
            continue
        verdict = prove(record)
        if verdict is None:
            return record, found.notes
        if verdict:
            found.notes.append(f"ignored the server record {path}: {verdict}")
        else:
            remove_record(path)  # nothing answers there: the pid was reused
    return None, found.notes


def prove(record: ServerRecord, timeout_s: float = 2.0) -> str | None:
    """None when the server at the record's URL proves it is the recorded one (its pid, an HMAC of a fresh challenge
    under the record's nonce); else why not ("" when nothing listens there)."""
    host, port = loopback_url(record.url)
    challenge = secrets.token_hex(16)
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", f"{WHOAMI_PATH}?challenge={challenge}", headers={"Accept": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read(4096)) if response.status == 200 else None
    except ConnectionRefusedError:
        return ""
    except (OSError, http.client.HTTPException, ValueError):
        return f"the program at {record.url} does not answer as llm serve does"
    finally:
        connection.close()
    expected = hmac.new(bytes.fromhex(record.nonce), challenge.encode("ascii"), hashlib.sha256).hexdigest()
    if not isinstance(answer, dict) or answer.get("pid") != record.pid or \
            not hmac.compare_digest(str(answer.get("proof", "")), expected):
        return f"the program at {record.url} is not the llm serve that wrote it (its key is not sent)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    except (OverflowError, ValueError):
        return False
    return True
