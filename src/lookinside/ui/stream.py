"""Print a reply as its tokens arrive.

Three modes. `markdown`: each finished block (text up to a blank line outside a code
fence) is printed once, permanently, as Rich Markdown; the unfinished block is shown in
a transient Live region cut to its last lines, so the newest text is always on screen
and nothing is printed twice into the scrollback. `probs`: each token coloured by its
probability. `plain`: the raw text, flushed as it comes (pipes, `--plain`).
A reply's leading whitespace (SentencePiece's "▁" after the assistant header) is dropped
unless the printer continues an earlier reply.
"""

from __future__ import annotations

import os
from typing import Literal

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

from lookinside.ui.text import prob_style

Mode = Literal["markdown", "probs", "plain"]
FENCE = "```"


def split_finished(text: str) -> tuple[str, str]:
    """(finished blocks, the unfinished rest): cut at the last blank line that is outside a code fence."""
    cut = 0
    fenced = False
    position = 0
    for line in text.splitlines(keepends=True):
        position += len(line)
        if line.lstrip().startswith(FENCE):
            fenced = not fenced
        elif not fenced and not line.strip() and line.endswith("\n") and position < len(text):
            cut = position
    return text[:cut], text[cut:]


class Tail:
    """A renderable drawn without trailing padding, and (with `height`) only its last lines.

    Showing the last lines keeps the newest text on screen in a Live region; trimming the
    padding keeps copied text clean.
    """

    def __init__(self, renderable: object, height: int | None = None) -> None:
        self.renderable = renderable
        self.height = None if height is None else max(1, height)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # One column short of the edge: a full-width line leaves some terminals in a pending wrap,
        # and a Live region that miscounts its height leaves a stale copy in the scrollback.
        rendered = console.render_lines(self.renderable, options.update_width(options.max_width - 1), pad=False)
        lines = [_rstrip(line) for line in rendered]
        while lines and not lines[0]:
            lines.pop(0)  # blocks are printed apart, so each one's own edge blank lines would double up
        while lines and not lines[-1]:
            lines.pop()
        for line in lines[-self.height :] if self.height else lines:
            yield from line
            yield Segment.line()


def _rstrip(line: list[Segment]) -> list[Segment]:
    """The line without its trailing plain spaces (spaces on a background colour stay)."""
    line = list(line)
    while line and not line[-1].control and (line[-1].style is None or line[-1].style.bgcolor is None):
        text = line[-1].text.rstrip(" ")
        if text:
            line[-1] = Segment(text, line[-1].style)
            break
        line.pop()
    return line


def screen_height(console: Console) -> int:
    """The terminal's real height; LINES in the environment (which Rich trusts) can be stale after a resize."""
    try:
        return os.get_terminal_size(console.file.fileno()).lines
    except (AttributeError, OSError, ValueError):
        return console.size.height


class StreamPrinter:
    """Feed it text deltas (with their probabilities); call `close()` when the reply ends."""

    def __init__(self, console: Console, mode: Mode = "markdown", strip_leading: bool = True) -> None:
        self.console = console
        self.mode = mode
        self.strip_leading = strip_leading  # off when continuing a reply: its first space matters
        self.text = ""  # the reply so far, leading whitespace dropped
        self._printed = 0  # how much of `text` is printed for good (markdown mode)
        self._live: Live | None = None
        self._blocks = 0  # markdown blocks printed for good

    def push(self, delta: str, prob: float = 1.0) -> None:
        """Show one more piece of the reply."""
        if not self.text and self.strip_leading:
            delta = delta.lstrip()
        if not delta:
            return
        self.text += delta
        if self.mode == "plain":
            self.console.file.write(delta)
            self.console.file.flush()
        elif self.mode == "probs":
            self.console.print(Text(delta, style=prob_style(prob)), end="")
        else:
            self._update_markdown()

    def close(self, note: str | None = None) -> str:
        """End the reply (with an optional dim note such as "cut"); return its text."""
        if self.mode == "markdown":
            self._stop_live()
            rest = self.text[self._printed :]
            if rest.strip():
                self._print_block(rest)
            self._printed = len(self.text)
        elif self.text and not self.text.endswith("\n"):
            self.console.file.write("\n") if self.mode == "plain" else self.console.print()
        if note:
            self.console.print(Text(note, style="dim" if self.mode != "plain" else ""))
        return self.text

    def _update_markdown(self) -> None:
        done, rest = split_finished(self.text[self._printed :])
        if done.strip():
            self._stop_live()
            self._print_block(done)
        self._printed += len(done)
        if rest:
            self._live_view(Tail(Markdown(rest), screen_height(self.console) - 2))

    def _print_block(self, text: str) -> None:
        if self._blocks:
            self.console.print()  # Markdown drops the blank line that ended the previous block
        self.console.print(Tail(Markdown(text)))
        self._blocks += 1

    def _live_view(self, renderable: Tail) -> None:
        if self._live is None:
            self._live = Live(renderable, console=self.console, transient=True, auto_refresh=False,
                              vertical_overflow="visible")
            self._live.start()
        self._live.update(renderable, refresh=True)

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
