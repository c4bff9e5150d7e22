"""The `llm chat` REPL: read a line, run a slash command or stream the reply, save; until Ctrl-D or /exit.

`ChatRepl` owns a `ChatSession` (core/chat/session.py, the chat itself) and talks to the terminal:
its keys and prompt are ui/repl_keys.py, its slash commands ui/repl_commands.py, and this module
the loop and the drawing of a streamed reply. Ctrl-C during a reply stops it and keeps the partial
reply, marked as cut; an expected mistake (a bad /set value, an unknown command, a conversation
that does not fit) is one line, never a traceback; SIGTERM, SIGHUP or a bug save the conversation
first.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompt_toolkit import PromptSession
from rich.console import Console

from lookinside.core import errors
from lookinside.core.backends.seam import Backend, LocalBackend
from lookinside.core.chat.conversation import Conversation
from lookinside.core.chat.session import ChatSession, Reply, survivable
from lookinside.core.paths import new_chat_file
from lookinside.ui.chat_views import stats_line
from lookinside.ui.repl_commands import SlashCommands
from lookinside.ui.repl_keys import COMMANDS, PROMPT, SlashCompleter, make_session, quiet_keys, unquoted
from lookinside.ui.stream import Mode, StreamPrinter

if TYPE_CHECKING:
    from lookinside.core.backends.seam import GenerateFn
    from lookinside.core.model.loading import LM

__all__ = ["BROKEN_NOTE", "COMMANDS", "CUT_NOTE", "LEAVE_HINT", "ChatRepl", "SlashCompleter", "make_session"]

LEAVE_HINT = "To leave, press Ctrl-D or type /exit."
CUT_NOTE = "[reply cut by Ctrl-C; kept in the history, marked as cut]"
BROKEN_NOTE = "[reply cut: the server stopped sending; kept in the history, marked as cut]"
RESCUED_SIGNALS = ("SIGTERM", "SIGHUP")  # kill, and the terminal closed: both save the conversation first


class Terminated(Exception):
    """SIGTERM or SIGHUP arrived: leave the loop the way an error does, saving the conversation."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _catch_terminations() -> dict[int, Any]:
    """Install `_terminated` for SIGTERM and SIGHUP (main thread only); the handlers it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    found = [getattr(signal, name) for name in RESCUED_SIGNALS if hasattr(signal, name)]
    return {signum: signal.signal(signum, _terminated) for signum in found}


class ChatRepl(SlashCommands):
    """Keys in, drawing out: a `ChatSession` does the chat, this class only talks to the terminal."""

    def __init__(self, model: LM | Backend, conversation: Conversation, console: Console,
                 session: PromptSession[str] | None = None, mode: Mode = "markdown",
                 generate_fn: GenerateFn | None = None) -> None:
        backend = model if isinstance(model, Backend) else LocalBackend(model, generate_fn)
        self.chat = ChatSession(backend, conversation)
        self.console = console
        self.session = session
        self.mode = mode
        self.show_stats = True
        self.probs = False
        self._told_autosave = False
        self.stream_broken: str | None = None  # why the last reply's stream ended early (a one-shot exits 1)
        self._warned_leaving = ""

    @property
    def autosave(self) -> Path | None:
        """Where every turn is written, for `llm chat --resume`."""
        return self.chat.autosave

    @autosave.setter
    def autosave(self, path: Path | None) -> None:
        self.chat.autosave = path

    # ---- the loop

    def run(self) -> int:
        """Read and answer messages until Ctrl-D or /exit; the exit code.

        An unexpected error, or SIGTERM, first writes the conversation to the data directory.
        """
        previous = _catch_terminations()
        try:
            return self._loop()
        except Terminated as exc:
            return self.rescue(f"terminated ({exc})", 128 + exc.signum)
        except Exception as exc:
            return self.rescue(f"unexpected error: {type(exc).__name__}: {exc}", 1)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def rescue(self, why: str, code: int) -> int:
        """Write the conversation where it can be found again, say where, and give the exit code."""
        try:
            written = self.chat.save(new_chat_file("rescued"), make_parents=True)
            message = f"{why}; the conversation is saved in {written} (llm chat --load that file)"
        except errors.LookinsideError as exc:
            message = f"{why}; the conversation could not be saved either: {exc}"
        try:
            self.hint(message)
        except OSError:  # the terminal is gone (SIGHUP): the file is what matters
            pass
        return code

    def _loop(self) -> int:
        while True:
            try:
                line = self.read()
            except KeyboardInterrupt:
                self.console.print(f"[dim]{LEAVE_HINT}[/]")
                continue
            except EOFError:
                if self.may_leave():
                    return 0
                continue
            try:
                if not self.handle(line) and self.may_leave():
                    return 0
            except KeyboardInterrupt:  # during a slash command: stop it, keep the session
                self.note("interrupted")

    def read(self) -> str:
        """One message: a line, several lines (Esc-Enter, a paste), or a \"\"\" block without its quotes."""
        if self.session is None:
            raise errors.BadInput("this chat has no prompt to read from (it answers one message)")
        return unquoted(self.session.prompt(PROMPT))

    def handle(self, line: str) -> bool:
        """Act on one input, then autosave; False means leave."""
        try:
            return self._handle(line)
        finally:
            self.save_quietly()

    def save_quietly(self) -> None:
        """Write the autosave file, if there is one and anything to keep; say so once if it fails."""
        problem = self.chat.save_quietly()
        if problem is None and self.chat.autosave_failed and not self._told_autosave:
            problem = f"autosave is off: {self.chat.autosave_failed}"  # it failed during a reply
        if problem:
            self._told_autosave = True
            self.hint(f"{problem}; /save PATH keeps the conversation")

    def may_leave(self) -> bool:
        """False the first time the user leaves a conversation that is in no file (autosave failed): say so, and how."""
        problem = self.chat.unkept()
        if problem is None or self._warned_leaving == problem + str(len(self.conversation.messages)):
            return True
        self._warned_leaving = problem + str(len(self.conversation.messages))
        self.hint(f"this conversation is in no file (autosave is off: {problem}); /save PATH keeps it, "
                  "/exit or Ctrl-D again leaves without it")
        return False

    def _handle(self, line: str) -> bool:
        text = line.strip()
        if not text:
            return True
        try:
            if text.startswith("/"):
                return self.command(text)
            self.send(text)
        except errors.LookinsideError as exc:
            self.hint(str(exc))
        except OSError as exc:  # a file a slash command touched; the session goes on
            self.hint(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        except Exception as exc:
            if not errors.is_out_of_memory(exc):
                raise
            self.hint("out of memory: try /set max_new_tokens lower, /clear, or a smaller --dtype; the session goes on")
        return True

    # ---- drawing a reply

    def draw(self, reply: Reply) -> None:
        """Stream a started reply to the screen; Ctrl-C stops it and keeps what came, marked as cut."""
        if reply.fitted.dropped_turns:
            context = self.chat.backend.context_length
            self.hint(f"context: dropped the oldest {reply.fitted.dropped_turns} messages "
                      f"({reply.fitted.dropped_tokens} tokens) to fit {context}; the system prompt is kept "
                      "(they stay in /save)")
        printer = StreamPrinter(self.console, "probs" if self.probs and self.mode != "plain" else self.mode,
                                strip_leading=reply.previous is None)
        broken: str | None = None
        try:
            with quiet_keys():
                for step in reply:
                    printer.push(step.text, step.prob)
        except KeyboardInterrupt:
            reply.cut = True
        except (Terminated, OSError):  # killed, hung up, or the screen gone mid-reply: keep what came, then leave
            reply.cut = True
            self.chat.finish(reply)
            raise
        except errors.StreamBroken as exc:  # a server gone mid-reply: keep what came, marked as cut
            reply.cut, broken = True, str(exc)
        except BaseException as exc:
            if survivable(exc) and reply.previous is None:
                self.chat.take_back_unanswered()  # never answered: the message goes back, the session goes on
            raise
        printer.close((BROKEN_NOTE if broken else CUT_NOTE) if reply.cut else None)
        self.stream_broken = broken
        if broken:
            self.hint(broken)
        if reply.previous is not None and not reply.text.strip() and not reply.cut:
            self.note("the reply had already ended: the model's next token is its end token")
        stats = self.chat.finish(reply)
        if self.show_stats and stats is not None:
            self.console.print(stats_line(stats), highlight=False)
