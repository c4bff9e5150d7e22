"""A chat as a core object: fit -> generate -> stats -> keep, with undo, retry, continue and transcripts.

`ChatSession` owns a `Conversation` and a `Backend` (core/backends/seam.py) and knows nothing of the
screen: the REPL (ui/repl.py) reads keys and draws, a notebook or a script can drive the same
session. A reply is two calls around the streaming, so the caller can draw each token:

    reply = session.begin()          # fit the context, start the stream (raises before any token)
    for step in reply: ...           # draw; Ctrl-C may stop it: then `reply.cut = True`
    stats = session.finish(reply)    # keep the text (a cut one marked as cut), compute the stats

The seed a reply used is the stream's (`stream.seed`), never a copy. Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lookinside.core import errors
from lookinside.core.chat.conversation import Conversation, Fitted
from lookinside.core.chat.journal import Journal, journal_path, remove_stale, token_record
from lookinside.core.chat.stats import ReplyStats, reply_stats
from lookinside.core.chat.transcripts import read_transcript, write_transcript
from lookinside.core.inside.interventions.requests import check_alpha
from lookinside.core.records import Step
from lookinside.core.request import GenerationSettings

if TYPE_CHECKING:
    from lookinside.core.backends.seam import Backend
    from lookinside.core.decoding.prompting import Message
    from lookinside.core.inside.interventions.records import SteerSpec
    from lookinside.core.records import Stream


def survivable(exc: BaseException) -> bool:
    """True for what a chat goes on after (a user's mistake, Ctrl-C, a file error, out of memory).

    Anything else is a bug: the session ends, and the conversation is saved with the unanswered message in it.
    """
    return isinstance(exc, (errors.LookinsideError, KeyboardInterrupt, OSError)) or errors.is_out_of_memory(exc)


@dataclass
class Reply:
    """One reply while it streams: iterate it for `Step`s; `cut` is set when the caller stopped it early."""

    fitted: Fitted
    stream: Stream
    previous: Message | None  # the assistant message being continued, None for a new reply
    steps: list[Step] = field(default_factory=list)
    cut: bool = False
    journal: Journal | None = None  # where each token goes as it comes (beside the autosave)
    token_text: Callable[[int], str] | None = None

    def __iter__(self) -> Iterator[Step]:
        for step in self.stream:
            self.steps.append(step)
            self._journal(step)
            yield step

    def _journal(self, step: Step) -> None:
        if self.journal is None:
            return
        try:
            self.journal.append(token_record(step, self.token_text))
        except (OSError, ValueError):  # a full disk: the reply goes on, the save at its end says what failed
            self.journal.close()
            self.journal = None

    @property
    def seed(self) -> int | None:
        """The seed the sampler used (None when greedy)."""
        return self.stream.seed

    @property
    def text(self) -> str:
        """What the reply added to the conversation (a new reply without its leading whitespace)."""
        text = "".join(step.text for step in self.steps)
        return text if self.previous is not None else text.lstrip()


@dataclass
class ChatSession:
    """A conversation with a backend, turn by turn; `autosave` is where every turn is written (None: nowhere)."""

    backend: Backend
    conversation: Conversation
    autosave: Path | None = None
    last_steps: list[Step] = field(default_factory=list)
    steer: SteerSpec | None = None  # what /steer adds to every reply while it is on
    autosave_failed: str | None = None  # why autosave went off, said again when the user leaves
    _written: str | None = field(default=None, init=False, repr=False)  # the last state written to a file

    # ---- replies

    def send(self, text: str) -> Reply:
        """Add a user message and start the reply; a reply that cannot start takes the message back."""
        self.conversation.add("user", text)
        try:
            return self.begin()
        except BaseException as exc:
            if survivable(exc):
                self.take_back_unanswered()
            raise

    def take_back_unanswered(self) -> None:
        """Remove a trailing user message that got no reply (two user turns in a row would confuse the template)."""
        if self.conversation.messages and self.conversation.messages[-1]["role"] == "user":
            self.conversation.messages.pop()

    def begin(self, continuation: bool = False) -> Reply:
        """Fit the conversation into the context and start the reply (or, with `continuation`, go on with the last)."""
        previous = self.conversation.last_reply if continuation else None
        if continuation and previous is None:
            raise errors.BadInput("nothing to continue: /continue goes on from the last reply")
        if continuation and not self.backend.capabilities.continue_reply:
            raise errors.BadInput("/continue needs the model here: a chat server cannot go on from a partial reply")
        fitted = self.backend.fit(self.conversation, previous["content"] if previous else None)
        settings = GenerationSettings(max_new_tokens=self.conversation.settings.max_new_tokens)
        journal = self.open_journal(continues=previous is not None)
        self.backend.start_reply()
        stream = self.backend.stream(fitted, self.conversation.settings.params, settings, self.steer)
        return Reply(fitted, stream, previous, journal=journal, token_text=self.backend.token_text)

    def finish(self, reply: Reply) -> ReplyStats | None:
        """Keep the reply in the conversation (marked if cut); its stats (None when no token came)."""
        # Every token, the end token and the bytes of an unfinished character included: /why shows them all.
        tokens = [token_record(step, self.backend.token_text) for step in reply.steps]
        steer = self.steer.describe() if self.steer is not None else None
        if reply.previous is None:
            self.conversation.add("assistant", reply.text.strip(), cut=reply.cut, tokens=tokens, steer=steer)
        else:
            reply.previous["content"] = (reply.previous["content"] + reply.text).rstrip()
            reply.previous["tokens"] = reply.previous.get("tokens", []) + tokens
            reply.previous.pop("cut", None)
            if reply.cut:
                reply.previous["cut"] = True
            if steer is not None:
                reply.previous["steer"] = steer
        self.last_steps = (self.last_steps if reply.previous is not None else []) + reply.steps
        self.close_journal(reply)
        if not reply.steps:
            return None
        prompt_tokens = len(reply.fitted.ids) if reply.fitted.ids is not None else None
        stats = reply_stats(reply.steps, prompt_tokens, self.backend.context_length, reply.seed,
                            self.backend.resources())
        return stats if self.steer is None else replace(stats, steer=self.steer.label())

    def set_steer(self, add: str, subtract: str | None, layer: int, alpha: float) -> str:
        """Steer every reply from now on (`/steer`): alpha x (stream of add - stream of subtract) at `layer`."""
        check_alpha(alpha)
        self.steer = self.backend.steering(add, subtract, layer, alpha)  # the model here, or the server's
        return self.steer.describe()

    def retry(self) -> Reply:
        """Answer the last message again."""
        if not self.conversation.pop_reply():
            raise errors.BadInput("nothing to retry: /retry answers the last message again once it has a reply")
        return self.begin()

    @property
    def fixed_seed(self) -> int | None:
        """The seed when the settings fix one for sampling (so /retry gives the same answer)."""
        params = self.conversation.settings.params
        return params.seed if not params.greedy else None

    def undo(self) -> int:
        """Take back the last exchange; how many messages went."""
        self.last_steps = []
        return self.conversation.undo()

    def clear(self) -> int:
        """Forget every turn (the system prompt and settings stay); how many messages went."""
        count = len(self.conversation.messages)
        self.conversation.clear()
        self.last_steps = []
        return count

    def set(self, name: str, value: str) -> None:
        """Change one setting from its text form (`/set NAME VALUE`)."""
        settings = self.conversation.settings.updated(name, value)
        context = self.backend.context_length
        if context is not None and settings.max_new_tokens >= context:
            raise errors.BadInput(f"max_new_tokens must be below the context of {context} tokens, "
                                  f"not {settings.max_new_tokens}: the prompt needs room too")
        self.conversation.settings = settings

    def count_tokens(self) -> int | None:
        """Tokens the conversation takes now (None where the backend cannot count)."""
        return self.backend.count_tokens(self.conversation)

    # ---- transcripts

    def save(self, path: Path, make_parents: bool = False) -> Path:
        """Write the conversation and its settings as a JSON transcript, atomically."""
        written = write_transcript(self.conversation, path, self.backend.name, make_parents=make_parents)
        self._written = self._state()
        return written

    def load(self, path: Path) -> str | None:
        """Go back to a saved conversation; the model it was held with."""
        self.conversation, model = read_transcript(path)
        self.last_steps = []
        return model

    def save_quietly(self) -> str | None:
        """Write the autosave file, if any and if there is anything to keep; a message when it failed (then it is off)."""
        if self.autosave is None or not self.conversation.messages:
            return None
        try:
            self.save(self.autosave, make_parents=True)
        except errors.LookinsideError as exc:
            return self._autosave_off(str(exc))
        remove_stale(self.autosave)  # the transcript is whole: a journal beside it is absorbed
        return None

    # ---- nothing typed is lost: the journal, and what is in no file

    def open_journal(self, continues: bool) -> Journal | None:
        """Before a reply: the conversation on disk as it is (the user's message in it), then the reply's journal."""
        if self.autosave is None or self.save_quietly() is not None or self.autosave is None:
            return None
        try:
            steer = self.steer.describe() if self.steer is not None else None
            return Journal.open(self.autosave, len(self.conversation.messages), continues, steer)
        except OSError as exc:
            self._autosave_off(f"cannot write {journal_path(self.autosave)}: {exc.strerror or exc}")
            return None

    def close_journal(self, reply: Reply) -> None:
        """After a reply: the autosave made whole with it, then its journal deleted (kept if the save failed)."""
        if reply.journal is None:
            return
        reply.journal.close()
        if self.save_quietly() is None and self.autosave is not None:
            reply.journal.discard()

    def _autosave_off(self, why: str) -> str:
        self.autosave, self.autosave_failed = None, why
        return f"autosave is off: {why}"

    def _state(self) -> str:
        c = self.conversation
        return json.dumps([c.system, c.messages, c.window, c.settings.to_json()], sort_keys=True, default=str)

    def unkept(self) -> str | None:
        """Why the conversation is in no file (autosave failed and nothing saved it since); None when it is kept."""
        if self.autosave_failed is None or self.autosave is not None or not self.conversation.messages:
            return None
        return None if self._written == self._state() else self.autosave_failed
