"""The `llm chat` REPL: prompt_toolkit input, slash commands, streamed replies.

`ChatRepl` owns a `Conversation` and a loaded model; `run()` reads messages until
Ctrl-D or /exit and returns the exit code. Every generated token comes from
`core.decoding.generate.generate` (injectable, so tests can interrupt it). Ctrl-C during a
reply stops it and keeps the partial reply, marked as cut; an expected mistake
(a bad /set value, an unknown command, a conversation that does not fit) is one
line, never a traceback.
"""

from __future__ import annotations

import difflib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.completion import Completer, Completion, ThreadedCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console
from rich.markup import escape

from lookinside.core import errors
from lookinside.core.chat.conversation import Conversation
from lookinside.core.chat.defaults import SETTABLE
from lookinside.core.chat.session import ChatSession, Reply, survivable
from lookinside.core.chat.transcripts import export_markdown
from lookinside.core.paths import data_dir, new_chat_file
from lookinside.ui.chat_views import WhyRow, context_meter, help_view, show_view, stats_line, why_view
from lookinside.ui.stream import Mode, StreamPrinter

if TYPE_CHECKING:
    from lookinside.core.backends.seam import Backend, GenerateFn
    from lookinside.core.model.loading import LM
    from lookinside.core.records import Step

QUOTES = '"""'
PROMPT = ">>> "
LEAVE_HINT = "To leave, press Ctrl-D or type /exit."
CUT_NOTE = "[reply cut by Ctrl-C; kept in the history, marked as cut]"
BROKEN_NOTE = "[reply cut: the server stopped sending; kept in the history, marked as cut]"

STEER_USAGE = "/steer LAYER ALPHA ADD [| SUBTRACT], e.g. /steer 2 4 Japan | France; /steer off"
# name -> (usage, what it does); the order is /help's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "/help": ("/help", "this list"),
    "/clear": ("/clear", "forget the conversation (the system prompt stays)"),
    "/system": ("/system [TEXT|none]", "show, set or remove the system prompt"),
    "/set": ("/set NAME VALUE", f"change a setting: {', '.join(SETTABLE)}"),
    "/show": ("/show", "the model, its end tokens and chat template, and the settings"),
    "/tokens": ("/tokens", "how much of the context the conversation uses"),
    "/retry": ("/retry", "answer the last message again"),
    "/undo": ("/undo", "take back the last message and its reply"),
    "/continue": ("/continue", "let the last reply go on"),
    "/save": ("/save [-p] [PATH]", "write the conversation and settings as JSON (-p: create missing directories)"),
    "/load": ("/load PATH", "go back to a saved conversation"),
    "/export": ("/export [-p] PATH.md|.html|.svg",
                "write the conversation: markdown, or HTML/SVG with each token coloured (-p: create directories)"),
    "/edit": ("/edit [TEXT]", "write the message in $EDITOR"),
    "/stats": ("/stats", "per-reply stats on or off"),
    "/probs": ("/probs", "colour each streamed token by its probability, on or off"),
    "/why": ("/why", "each token of the last reply, its probability and the alternatives"),
    "/steer": ("/steer LAYER ALPHA ADD [| SUBTRACT] | off",
               "add ALPHA x (stream of ADD - stream of SUBTRACT) at LAYER to every reply (docs/interventions.md)"),
    "/exit": ("/exit", "leave (Ctrl-D too)"),
}


EXIT_TERMINATED = 143  # 128 + SIGTERM
RESCUED_SIGNALS = ("SIGTERM", "SIGHUP")  # kill, and the terminal closed: both save the conversation first
RECAP = 10  # messages shown again after --resume, --load or /load


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


def _parents_flag(argument: str) -> tuple[bool, str]:
    """`-p PATH` -> (True, PATH): the user asks for missing directories to be made."""
    flag, _, rest = argument.partition(" ")
    return (True, rest.strip()) if flag == "-p" else (False, argument)


def history(keep: bool) -> History:
    """Input history kept across sessions in the data directory, or only in memory."""
    if not keep:
        return InMemoryHistory()
    path = data_dir() / "chat_history"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


class SlashCompleter(Completer):
    """Completes slash commands at the start of the input."""

    def get_completions(self, document: Document, complete_event: object) -> Iterable[Completion]:
        """Commands that start with what is typed, while it is one word starting with '/'."""
        text = document.text_before_cursor
        if not text.startswith("/") or " " in text:
            return
        for name, (usage, what) in COMMANDS.items():
            if name.startswith(text):
                yield Completion(name, start_position=-len(text), display=usage, display_meta=what)


def is_open_block(text: str) -> bool:
    """True while the input starts a \"\"\" block that is not closed yet."""
    text = text.strip()
    return text.startswith(QUOTES) and not is_block(text)


def is_block(text: str) -> bool:
    """True for a whole \"\"\" block: opening and closing quotes."""
    text = text.strip()
    return len(text) >= 2 * len(QUOTES) and text.startswith(QUOTES) and text.endswith(QUOTES)


def key_bindings() -> KeyBindings:
    """Esc-Enter / Alt-Enter (and Enter in an open \"\"\" block) add a line; Ctrl-C clears, or hints how to leave."""
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("enter", filter=Condition(lambda: is_open_block(get_app().current_buffer.text)))
    def _block_line(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")  # inside a \"\"\" block Enter adds a line, until the closing quotes

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    return bindings


def make_session(keep_history: bool = True, **kwargs: Any) -> PromptSession[str]:
    """The prompt: history, Ctrl-R search, slash completion, multiline keys (kwargs: input/output for tests)."""
    if "output" not in kwargs:
        from prompt_toolkit.output import create_output

        # With stdout redirected (`llm chat > log.txt`) the prompt is drawn on the terminal's stderr,
        # so the file gets only the replies, free of escape codes.
        kwargs["output"] = create_output(always_prefer_tty=True)
    return PromptSession(
        history=history(keep_history),
        completer=ThreadedCompleter(SlashCompleter()),
        complete_while_typing=True,
        key_bindings=key_bindings(),
        enable_history_search=False,  # Up/Down walk the history; Ctrl-R searches it
        prompt_continuation="... ",
        **kwargs,
    )


class ChatRepl:
    """Keys in, drawing out: a `ChatSession` (core/chat/session.py) does the chat, this class only talks to the terminal."""

    def __init__(self, model: LM | Backend, conversation: Conversation, console: Console,
                 session: PromptSession[str] | None = None, mode: Mode = "markdown",
                 generate_fn: GenerateFn | None = None) -> None:
        from lookinside.core.backends.seam import LocalBackend

        backend = model if hasattr(model, "stream") else LocalBackend(model, generate_fn)  # an LM has no stream()
        self.chat = ChatSession(backend, conversation)  # type: ignore[arg-type]
        self.console = console
        self.session = session
        self.mode: Mode = mode
        self.show_stats = True
        self.probs = False
        self._told_autosave = False
        self.stream_broken: str | None = None  # why the last reply's stream ended early (a one-shot exits 1)
        self._warned_leaving = ""

    @property
    def conversation(self) -> Conversation:
        """The conversation being held."""
        return self.chat.conversation

    @property
    def last_steps(self) -> list[Step]:
        """The tokens of the last reply, for /why."""
        return self.chat.last_steps

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
        assert self.session is not None, "run() needs a prompt session"
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
        assert self.session is not None
        text = self.session.prompt(PROMPT)
        if is_block(text):
            return text.strip()[len(QUOTES) : -len(QUOTES)].strip("\n")
        return text

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

    def recap(self, limit: int = RECAP) -> None:
        """The last turns of a conversation taken up again (after --resume, --load, /load)."""
        messages = self.conversation.messages
        if len(messages) > limit:
            self.note(f"({len(messages) - limit} earlier messages not shown)")
        for message in messages[-limit:]:
            cut = " (cut)" if message.get("cut") else ""
            self.console.print(f"[bold]{message['role']}{cut}:[/] {escape(message['content'])}", highlight=False)

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

    def command(self, text: str) -> bool:
        """Run a slash command; False for /exit."""
        name, _, argument = text.partition(" ")
        name, argument = name.lower(), argument.strip()
        if name == "/exit":
            return False
        if name not in COMMANDS:
            close = difflib.get_close_matches(name, COMMANDS, n=1)
            self.hint(f"unknown command {name}" + (f"; did you mean {close[0]}?" if close else "; /help lists the commands"))
            return True
        getattr(self, "_cmd_" + name[1:])(argument)
        return True

    def hint(self, message: str) -> None:
        """One line about a mistake."""
        self.console.print(f"[yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        """One dim line of information."""
        self.console.print(f"[dim]{escape(message)}[/]", highlight=False, soft_wrap=True)

    # ---- replies

    def send(self, text: str) -> None:
        """Add a user message and stream the reply to it."""
        self.draw(self.chat.send(text))

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

    # ---- slash commands (_cmd_NAME gets the text after the command)

    def _cmd_help(self, argument: str) -> None:
        self.console.print(help_view(list(COMMANDS.values())))

    def _cmd_clear(self, argument: str) -> None:
        count = self.chat.clear()
        kept = "; the system prompt stays" if self.conversation.system else ""
        self.note(f"cleared {count} messages{kept}")

    def _cmd_system(self, argument: str) -> None:
        if not argument:
            self.note(f"system prompt: {self.conversation.system}" if self.conversation.system else "no system prompt")
            return
        self.conversation.system = None if argument.lower() == "none" else argument
        self.note("system prompt removed" if self.conversation.system is None else "system prompt set; it applies from the next reply")

    def _cmd_set(self, argument: str) -> None:
        parts = argument.split()
        if len(parts) != 2:
            self.hint(f"usage: /set NAME VALUE, NAME one of {', '.join(SETTABLE)}  (now: {self._settings_line()})")
            return
        name = parts[0].lower().replace("-", "_")
        self.chat.set(name, parts[1])
        self.note(f"{name} set: {self._settings_line()}")

    def _settings_line(self) -> str:
        settings = self.conversation.settings
        return f"{settings.params.describe()}, max_new_tokens={settings.max_new_tokens}"

    def _cmd_show(self, argument: str) -> None:
        self.console.print(show_view(self.chat.backend.facts(), self.conversation.settings, self.conversation.system))

    def _cmd_tokens(self, argument: str) -> None:
        used, context = self.chat.count_tokens(), self.chat.backend.context_length
        if used is None or context is None:
            self.hint("this backend cannot count tokens before sending them; each reply's stats line says what it used")
            return
        self.console.print(context_meter(used, context, self.conversation.settings.max_new_tokens,
                                         self.conversation.window), soft_wrap=True)

    def _cmd_retry(self, argument: str) -> None:
        if self.conversation.last_reply and self.chat.fixed_seed is not None:
            self.note(f"the seed is fixed at {self.chat.fixed_seed}: /set seed none for a new answer")
        self.draw(self.chat.retry())

    def _cmd_undo(self, argument: str) -> None:
        removed = self.chat.undo()
        self.note(f"took back {removed} messages" if removed else "nothing to undo")

    def _cmd_continue(self, argument: str) -> None:
        self.draw(self.chat.begin(continuation=True))

    def _cmd_save(self, argument: str) -> None:
        make_parents, argument = _parents_flag(argument)
        path = Path(argument) if argument else new_chat_file("chat")
        written = self.chat.save(path, make_parents=make_parents or not argument)
        self.note(f"saved {len(self.conversation.messages)} messages and the settings to {written}")

    def _cmd_load(self, argument: str) -> None:
        if not argument:
            self.hint("usage: /load PATH (a transcript written by /save)")
            return
        model, name = self.chat.load(Path(argument)), self.chat.backend.name
        other = f"; it was held with {model}, now answering with {name}" if model and model != name else ""
        conversation = self.conversation
        self.note(f"loaded {len(conversation.messages)} messages and the settings from {argument}{other}")
        self.recap()

    def _cmd_export(self, argument: str) -> None:
        make_parents, argument = _parents_flag(argument)
        if not argument:
            self.hint("usage: /export [-p] PATH.md|PATH.html|PATH.svg")
            return
        path = Path(argument).expanduser()
        if path.suffix.lower() in (".html", ".htm", ".svg"):
            written = export_picture(self.conversation, path, self.chat.backend.name, make_parents)
        else:
            written = export_markdown(self.conversation, path, self.chat.backend.name, make_parents)
        self.note(f"exported {len(self.conversation.messages)} messages to {written}")

    def _cmd_edit(self, argument: str) -> None:
        text = edit_in_editor(argument)
        if not text.strip():
            self.note("empty message: nothing sent")
            return
        self.console.print(f"[bold]{PROMPT}[/]{escape(text)}", highlight=False)
        self.send(text.strip())

    def _cmd_stats(self, argument: str) -> None:
        self.show_stats = not self.show_stats
        self.note(f"per-reply stats {'on' if self.show_stats else 'off'}")

    def _cmd_probs(self, argument: str) -> None:
        self.probs = not self.probs
        state = "on: green sure, yellow, orange, red unlikely" if self.probs else "off"
        self.note(f"token probability colours {state}" + (" (not in --plain)" if self.mode == "plain" else ""))

    def _cmd_steer(self, argument: str) -> None:
        if argument.lower() in ("off", "none", "clear"):
            self.chat.steer = None
            self.note("steer off")
            return
        if not argument:
            self.note(self.chat.steer.describe() if self.chat.steer is not None else "no steer: " + STEER_USAGE)
            return
        layer, alpha, texts = (argument.split(maxsplit=2) + ["", ""])[:3]
        add, _, subtract = texts.partition("|")
        try:
            depth, weight = int(layer), float(alpha)
        except ValueError:
            raise errors.BadInput(STEER_USAGE) from None
        if not add.strip():
            raise errors.BadInput(STEER_USAGE)
        self.note(self.chat.set_steer(add.strip(), subtract.strip() or None, depth, weight) + " on every reply")

    def _cmd_why(self, argument: str) -> None:
        if not self.last_steps:
            self._why_saved()
            return
        text = self.chat.backend.token_text
        rows = [WhyRow(text(s.token_id), s.prob, s.rank, [(text(i), p) for i, p in s.top if i != s.token_id][:4])
                for s in self.last_steps]
        self.console.print(why_view(rows))

    def _why_saved(self) -> None:
        """/why for a reply loaded from a transcript: the probabilities (and runners-up) the file kept."""
        reply = self.conversation.last_reply
        rows = saved_why_rows(reply) if reply else []
        if not rows:
            self.hint("no reply to explain yet: /why looks at the last reply")
            return
        self.console.print(why_view(rows))


def saved_why_rows(message: dict[str, Any]) -> list[WhyRow]:
    """/why's rows from a saved reply's tokens: [text, probability] (older files) or with rank and runners-up."""
    rows = []
    for token in message.get("tokens") or []:
        text, prob = token[0], token[1] if token[1] is not None else float("nan")
        rank = token[2] if len(token) > 2 else None
        alternatives = [(alt, p) for alt, p in token[3]] if len(token) > 3 else []
        rows.append(WhyRow(text, prob, rank, alternatives))
    return rows


@contextmanager
def quiet_keys() -> Iterator[None]:
    """While a reply streams, keys typed ahead are not echoed into it; they wait for the next prompt.

    Only echo and line buffering go off: Ctrl-C still sends SIGINT, which stops the reply.
    """
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    except (ImportError, OSError, ValueError, AttributeError):
        saved = None
    if saved is None:
        yield  # not a terminal (pipes, tests) or not POSIX
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        except (termios.error, OSError):
            pass  # the terminal is gone (SIGHUP): the exception on its way out matters more


def edit_in_editor(initial: str = "") -> str:
    """Open $VISUAL or $EDITOR (else vi) on a temp file; its text once the editor exits."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    fd, name = tempfile.mkstemp(prefix="llm-chat-", suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(initial)
        try:
            code = subprocess.call([*shlex.split(editor), name])
        except OSError as exc:
            raise errors.BadInput(f"could not start the editor {editor!r} ({exc}); set $EDITOR") from None
        if code != 0:
            raise errors.BadInput(f"the editor {editor!r} exited with {code}: nothing sent")
        return Path(name).read_text(encoding="utf-8")
    finally:
        Path(name).unlink(missing_ok=True)


def export_picture(conversation: Conversation, path: Path, model: str, make_parents: bool = False) -> Path:
    """Write the conversation as HTML or SVG (by the suffix), replies coloured by token probability, atomically."""
    from lookinside.ui.chat_views import transcript_view
    from lookinside.ui.console import save_view

    if make_parents:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.BadInput(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    svg = path.suffix.lower() == ".svg"
    save_view(transcript_view(conversation, model), path if svg else None, None if svg else path)
    return path
