"""The chat's slash commands: `SlashCommands.command` runs one (`/NAME ARGUMENT` -> `_cmd_NAME(ARGUMENT)`).

A mixin of `ChatRepl` (ui/repl.py): the commands act on its `ChatSession` (`self.chat`) and print
one line, or one view of ui/chat_views.py; a reply they start (`/retry`, `/continue`, `/edit`) is
drawn by the REPL's `draw`. Their names and usage are `COMMANDS` (ui/repl_keys.py), which /help
lists and the prompt completes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from lookinside.core import errors
from lookinside.core.chat.defaults import SETTABLE
from lookinside.core.chat.transcripts import export_markdown
from lookinside.core.paths import new_chat_file
from lookinside.ui.chat_views import WhyRow, context_meter, help_view, show_view, why_view
from lookinside.ui.repl_keys import COMMANDS, PROMPT, STEER_USAGE, edit_in_editor
from lookinside.ui.stream import Mode

if TYPE_CHECKING:
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.session import ChatSession, Reply
    from lookinside.core.records import Step

RECAP = 10  # messages shown again after --resume, --load or /load
WHY_ALTERNATIVES = 4  # runners-up per row of /why, as the transcript keeps them


class SlashCommands:
    """The slash commands of a REPL that holds `chat`, `console`, `mode`, `show_stats`, `probs`, and can `draw`."""

    chat: ChatSession
    console: Console
    mode: Mode
    show_stats: bool
    probs: bool
    draw: Callable[[Reply], None]  # streams a started reply to the screen (ChatRepl.draw)

    @property
    def conversation(self) -> Conversation:
        """The conversation being held."""
        return self.chat.conversation

    @property
    def last_steps(self) -> list[Step]:
        """The tokens of the last reply generated here, for /why."""
        return self.chat.last_steps

    def send(self, text: str) -> None:
        """Add a user message and stream the reply to it."""
        self.draw(self.chat.send(text))

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

    def recap(self, limit: int = RECAP) -> None:
        """The last turns of a conversation taken up again (after --resume, --load, /load)."""
        messages = self.conversation.messages
        if len(messages) > limit:
            self.note(f"({len(messages) - limit} earlier messages not shown)")
        for message in messages[-limit:]:
            cut = " (cut)" if message.get("cut") else ""
            steer = f" [dim]({escape(message['steer'])})[/]" if message.get("steer") else ""
            self.console.print(f"[bold]{message['role']}{cut}:[/]{steer} {escape(message['content'])}",
                               highlight=False)

    # ---- the commands (_cmd_NAME gets the text after the command)

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
        self.note(f"loaded {len(self.conversation.messages)} messages and the settings from {argument}{other}")
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
        if self.last_steps:
            text = self.chat.backend.token_text
            rows = [WhyRow(text(s.token_id), s.prob, s.rank,
                           [(text(i), p) for i, p in s.top if i != s.token_id][:WHY_ALTERNATIVES])
                    for s in self.last_steps]
        else:  # a reply loaded from a transcript: what the file kept
            reply = self.conversation.last_reply
            rows = saved_why_rows(reply) if reply else []
        if not rows:
            self.hint("no reply to explain yet: /why looks at the last reply")
            return
        self.console.print(why_view(rows))


def saved_why_rows(message: dict[str, Any]) -> list[WhyRow]:
    """/why's rows from a saved reply's tokens (core/chat/journal.token_record; version 1 files have fewer fields)."""
    rows = []
    for token in message.get("tokens") or []:
        text, prob = token[0], token[1] if token[1] is not None else float("nan")
        rank = token[2] if len(token) > 2 else None
        alternatives = [(alt, p) for alt, p in token[3]] if len(token) > 3 else []
        shown = token[4] if len(token) > 4 else text  # the token itself: "<|end|>" where the reply got no text
        rows.append(WhyRow(shown, prob, rank, alternatives))
    return rows


def export_picture(conversation: Conversation, path: Path, model: str, make_parents: bool = False) -> Path:
    """Write the conversation as HTML or SVG (by the suffix), replies coloured by token probability, atomically."""
    from lookinside.ui.chat_views import transcript_view  # deferred: rich
    from lookinside.ui.console import save_view  # deferred: rich

    if make_parents:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.BadInput(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    svg = path.suffix.lower() == ".svg"
    save_view(transcript_view(conversation, model), path if svg else None, None if svg else path)
    return path


def _parents_flag(argument: str) -> tuple[bool, str]:
    """`-p PATH` -> (True, PATH): the user asks for missing directories to be made."""
    flag, _, rest = argument.partition(" ")
    return (True, rest.strip()) if flag == "-p" else (False, argument)
