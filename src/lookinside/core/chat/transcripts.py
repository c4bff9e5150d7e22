"""Conversations on disk: JSON transcripts written atomically, read back field by field, exported to markdown.

A transcript keeps each reply's tokens with their probabilities at full precision (the end token too),
and how a steered reply was steered, so a chat loaded later can still answer `/why` as it did live
and an export says which replies were not the model's own; a reply cut by a crash is folded back
from its journal (core/chat/journal.py).

Versions: 2 (now) keeps each token as [text, probability, rank, runners-up, token] and a reply's
"steer"; 1 kept [text, probability, rank, runners-up] rounded to 4 decimals, without the end
token. Both are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from lookinside.core import errors
from lookinside.core.chat.conversation import Conversation
from lookinside.core.chat.defaults import ChatRequest, ChatSettings
from lookinside.core.chat.journal import fold
from lookinside.core.chat.transcript_fields import checked
from lookinside.core.files import write_atomically
from lookinside.core.finite import dumps
from lookinside.core.wire import to_wire

TRANSCRIPT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def write_transcript(conversation: Conversation, path: Path, model: str, make_parents: bool = False) -> Path:
    """Write the transcript as JSON atomically: a crash leaves the old file or the new one, never half."""
    # the conversation as every record is written (core/wire.py): system, messages, settings (with where the
    # sampling defaults came from, which the reader leaves aside: a loaded chat's come from its transcript), window
    data = {"version": TRANSCRIPT_VERSION, "model": model, **to_wire(conversation)}
    path = path.expanduser()
    write_atomically(path, dumps(data, indent=2) + "\n", make_parents)  # strict JSON: a NaN is null, said in "nulls"
    return path


def read_transcript(path: Path) -> tuple[Conversation, str | None]:
    """A conversation saved by `write_transcript`, and the model it was held with."""
    path = path.expanduser()
    try:
        if path.is_dir():
            raise errors.BadInput(f"{path} is a directory, not a transcript: give a file written by /save")
        if path.exists() and not path.is_file():  # a FIFO would wait forever for a writer
            raise errors.BadInput(f"{path} is not a file: give a transcript written by /save")
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise errors.BadInput(f"{path} is empty: not a transcript (a save cut off before it was written?)")
        data = json.loads(text)
    except FileNotFoundError:
        raise errors.BadInput(f"no transcript at {path}") from None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated"):  # it stops before it closes
            raise errors.BadInput(f"{path} is cut short: its JSON ends at line {exc.lineno} before it closes "
                                  "(a truncated file)") from None
        raise errors.BadInput(f"{path} is not a readable JSON transcript ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.BadInput(f"{path} is not a readable JSON transcript ({exc})") from None
    version = data.get("version") if isinstance(data, dict) else None
    if version is not None and version not in READABLE_VERSIONS:
        raise errors.BadInput(f"{path} is a transcript of version {version!r}; this lookinside reads versions "
                              f"{', '.join(map(str, READABLE_VERSIONS))}")
    system, messages, window, settings, model = checked(data, path)  # each field, or one line naming it
    conversation = Conversation(system=system, messages=messages, settings=ChatSettings.from_json(settings),
                                window=window)
    fold(path, conversation)  # the reply a killed process was writing, as far as it got
    return conversation, model


def to_markdown(conversation: Conversation, model: str) -> str:
    """The conversation as a markdown document."""
    settings = f"Settings: {conversation.settings.params.describe()}, max_new_tokens={conversation.settings.max_new_tokens}"
    lines = [f"# Chat with {model}", "", settings, ""]
    if conversation.system:
        lines += ["## System", "", conversation.system, ""]
    for message in conversation.messages:
        title = "User" if message["role"] == "user" else "Assistant"
        cut = " (cut)" if message.get("cut") else ""
        steer = [f"*Steered: {message['steer']}; not the model's plain answer.*", ""] if message.get("steer") else []
        lines += [f"## {title}{cut}", "", *steer, message["content"], ""]
    return "\n".join(lines)


def export_markdown(conversation: Conversation, path: Path, model: str, make_parents: bool = False) -> Path:
    """Write `to_markdown` to `path` (which must end in .md), atomically."""
    path = path.expanduser()
    if path.suffix.lower() not in (".md", ".markdown"):
        raise errors.BadInput(f"export to a markdown file: {path.name} should end in .md (or .html or .svg for "
                              "a picture with each token coloured)")
    write_atomically(path, to_markdown(conversation, model), make_parents)
    return path


def continued(path: Path, system: str | None, request: ChatRequest) -> tuple[Conversation, str | None]:
    """A saved conversation to go on with, and the model it was held with: its system prompt and settings, unless
    the user gave new ones (`system`, the sampling flags in `request`)."""
    conversation, model = read_transcript(path)
    if system is not None:
        conversation.system = system
    conversation.settings = request.laid_over(conversation.settings)
    return conversation, model
