"""A reply's journal: each streamed token appended to a file beside the autosave, so a kill loses nothing.

The autosave (`session-....json`) is rewritten whole, atomically, before a reply starts (so the
user's message is on disk before the first token is computed) and again when the reply ends.
Between the two, every token is appended as one JSON line to `session-....json.part`:

    {"after": 4, "continues": false}                 the header: the transcript had 4 messages
    [" The", 0.99971, 1, [[" A", 0.00021]], " The"]  one line per token: text, probability, rank,
                                                     alternatives, the token as /why shows it

When the reply ends and the autosave is whole again, the journal is deleted. After a `kill -9`
or a power cut, `fold` reads the journal back into the conversation: the reply as far as it got,
marked as cut. A journal that does not match its transcript (a later save, another reply) is
ignored. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.records import Step

SUFFIX = ".part"
ALTERNATIVES = 4  # runners-up kept per token, for /why after a reload


def journal_path(transcript: Path) -> Path:
    """Where the journal of `transcript`'s current reply lives."""
    return transcript.with_name(transcript.name + SUFFIX)


def token_record(step: Step, token_text: Callable[[int], str] | None = None) -> list[Any]:
    """A streamed token as the transcript keeps it, probabilities at full precision (JSON keeps every digit):
    [text, probability, rank, [[alternative, probability], ...], token], where text is what the token added
    to the reply (empty for `<|end|>`, or a byte of a character still incomplete) and token is the token
    itself, as /why shows it."""
    prob = step.prob if math.isfinite(step.prob) else None
    record: list[Any] = [step.text, prob]
    if token_text is not None:
        alternatives = [[token_text(i), p] for i, p in step.top if i != step.token_id and math.isfinite(p)]
        record += [step.rank, alternatives[:ALTERNATIVES], token_text(step.token_id)]
    return record


@dataclass
class Journal:
    """An open journal: `append` writes one token and hands it to the OS (a killed process loses nothing)."""

    path: Path
    file: IO[str]

    @classmethod
    def open(cls, transcript: Path, after: int, continues: bool, steer: str | None = None) -> Journal:
        """Start the journal of a reply to a transcript of `after` messages, steered as `steer` says (OSError when it
        cannot be written)."""
        path = journal_path(transcript)
        file = path.open("w", encoding="utf-8")
        try:
            header = {"after": after, "continues": continues, **({"steer": steer} if steer else {})}
            file.write(json.dumps(header, ensure_ascii=False) + "\n")
            file.flush()
        except BaseException:
            file.close()
            raise
        return cls(path, file)

    def append(self, record: list[Any]) -> None:
        """One token, flushed to the OS at once (OSError on a full disk)."""
        self.file.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        """Close the file; it stays on disk until `discard`."""
        try:
            self.file.close()
        except OSError:
            pass

    def discard(self) -> None:
        """Close and delete the journal: the transcript now holds the whole reply."""
        self.close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


def fold(transcript: Path, conversation: Conversation) -> bool:
    """Add the reply an interrupted process left in `transcript`'s journal, marked as cut; True if there was one."""
    records = _read(journal_path(transcript))
    if records is None:
        return False
    header, tokens = records
    messages = conversation.messages
    if header.get("after") != len(messages) or not tokens:
        return False  # written for another state of the transcript, or no token arrived
    text = "".join(token[0] for token in tokens)
    steer = header.get("steer")
    if header.get("continues"):
        if not messages or messages[-1]["role"] != "assistant":
            return False
        previous = messages[-1]
        previous["content"] = (previous["content"] + text).rstrip()
        previous["tokens"] = previous.get("tokens", []) + tokens
        previous["cut"] = True
        if isinstance(steer, str):
            previous["steer"] = steer
        return True
    if not messages or messages[-1]["role"] != "user":
        return False
    conversation.add("assistant", text.strip(), cut=True, tokens=tokens, steer=steer if isinstance(steer, str) else None)
    return True


def _read(path: Path) -> tuple[dict[str, Any], list[list[Any]]] | None:
    """The journal's header and its whole token lines (a line cut by the kill is left out); None if unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines:
        return None
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        return None
    if not isinstance(header, dict):
        return None
    tokens = []
    for line in lines[1:]:
        try:
            token = json.loads(line)
        except json.JSONDecodeError:
            break  # the last line, half-written when the process died
        if not (isinstance(token, list) and len(token) >= 2 and isinstance(token[0], str)):
            break
        tokens.append(token)
    return header, tokens


def remove_stale(transcript: Path) -> None:
    """Delete a journal the transcript has absorbed (after a whole save)."""
    try:
        os.unlink(journal_path(transcript))
    except OSError:
        pass
