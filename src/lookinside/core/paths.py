"""Where lookinside keeps its files: input history, saved, autosaved and rescued chats."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from platformdirs import user_data_dir

from lookinside.core import errors


def data_dir() -> Path:
    """Where lookinside keeps chat history and saved chats ($LOOKINSIDE_DATA_DIR overrides)."""
    if os.environ.get("LOOKINSIDE_DATA_DIR"):
        return Path(os.environ["LOOKINSIDE_DATA_DIR"]).expanduser()
    return Path(user_data_dir("lookinside", appauthor=False))


def not_ours_alone(info: os.stat_result, subject: str = "it", fix: str = "chmod go-w it") -> str | None:
    """Why a file or folder (its `os.stat_result`) is not this user's alone to write, said of `subject`; None when
    it is. The project's rule for anything it reads as trusted or runs: another user could have planted it."""
    if info.st_uid != os.geteuid():
        return f"{subject} belongs to uid {info.st_uid}, not to you"
    if info.st_mode & 0o022:
        return f"others can write to {subject} (mode {stat.S_IMODE(info.st_mode):o}); {fix}"
    return None


def chats_dir() -> Path:
    """Saved, autosaved and rescued conversations."""
    return data_dir() / "chats"


def new_chat_file(kind: str) -> Path:
    """A file name no conversation has yet: `session-...` (a chat's autosave), `asked-...` (a one-shot question's),
    `chat-...` (/save), `rescued-...`.

    The process id is in the name: two chats started in the same second never share a file.
    """
    stamp = time.strftime(f"{kind}-%Y%m%d-%H%M%S-{os.getpid()}")
    path, n = chats_dir() / f"{stamp}.json", 1
    while path.exists():
        n += 1
        path = chats_dir() / f"{stamp}-{n}.json"
    return path


def last_session() -> Path:
    """The most recently written autosaved (or rescued) conversation, for --resume: one a person had at the prompt,
    never a one-shot or piped question (those are `asked-...`)."""
    found = [p for p in chats_dir().glob("*.json") if p.name.startswith(("session-", "rescued-"))]
    if not found:
        journals = sorted(chats_dir().glob("session-*.json.part"))
        if journals:  # a reply's journal whose transcript is gone: nothing whole to go on with
            raise errors.BadInput(f"no conversation to resume: {journals[-1]} is the journal of a reply, but its "
                                  f"transcript {journals[-1].with_suffix('')} is gone")
        raise errors.BadInput(f"no conversation to resume: none has been saved in {chats_dir()} yet")
    return max(found, key=lambda p: p.stat().st_mtime)
