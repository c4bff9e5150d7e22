"""The chat's keyboard: the prompt (history, Ctrl-R, slash completion, multiline keys), the slash commands'
names, quiet keys while a reply streams, and $EDITOR.

Nothing here draws a reply or runs a command: ui/repl.py reads lines through `make_session`, and
ui/repl_commands.py runs what `COMMANDS` names.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.completion import Completer, Completion, ThreadedCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from lookinside.core import errors
from lookinside.core.chat.defaults import SETTABLE
from lookinside.core.paths import data_dir

QUOTES = '"""'
PROMPT = ">>> "

STEER_USAGE = "/steer LAYER ALPHA ADD [| SUBTRACT], e.g. /steer 2 4 Japan | France; /steer off"
# name -> (usage, what it does); the order is /help's order. ui/repl_commands.py has a `_cmd_NAME` for each.
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


def unquoted(text: str) -> str:
    """A \"\"\" block without its quotes; any other input as typed."""
    return text.strip()[len(QUOTES) : -len(QUOTES)].strip("\n") if is_block(text) else text


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


@contextmanager
def quiet_keys() -> Iterator[None]:
    """While a reply streams, keys typed ahead are not echoed into it; they wait for the next prompt.

    Only echo and line buffering go off: Ctrl-C still sends SIGINT, which stops the reply.
    """
    try:
        import termios  # deferred: POSIX only (its ImportError is caught below)

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
    """Open $VISUAL or $EDITOR (else vi) on a temporary file; its text once the editor exits.

    Not click.edit: it runs the editor through a shell, so a missing editor is the shell's exit 127
    ("Editing failed") rather than "could not start the editor X".
    """
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
