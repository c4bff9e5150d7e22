"""Text that comes in from outside: arguments, standard input, files; decoded explicitly, never a traceback.

Python hands over argv bytes that are not UTF-8 as lone surrogates (`\\udcff`), which a
tokenizer refuses with a TypeError. Every PROMPT/TEXT argument goes through `text_argument`
(a Typer callback): `-` reads standard input (one trailing newline dropped, as `echo` adds it),
and bytes that are not UTF-8 become U+FFFD with a one-line warning on stderr. Binary input (a NUL byte) is refused. No torch here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lookinside.core.errors import BadInput

STDIN = "-"


def decode(data: bytes, source: str) -> str:
    """UTF-8 text from `data`; invalid bytes become U+FFFD with a warning, binary data is refused."""
    if b"\0" in data:
        raise BadInput(f"{source} looks binary (it holds NUL bytes): give text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        warn(f"{source} is not valid UTF-8: the bad bytes are shown as \ufffd")
        return data.decode("utf-8", errors="replace")


def clean(text: str, source: str) -> str:
    """`text` as Python received it from argv, with undecodable bytes (surrogates) replaced."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return decode(text.encode("utf-8", errors="surrogateescape"), source)


def read_stdin(source: str = "standard input") -> str:
    """All of standard input, decoded; a closed standard input is an error."""
    if sys.stdin is None:
        raise BadInput(f"{source} is closed: nothing to read")
    try:
        return decode(sys.stdin.buffer.read(), source)
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None


def read_file(path: Path) -> str:
    """A text file's contents, decoded like standard input; a missing or unreadable file is one line."""
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode(data, str(path))


def text_or_file(text: str | None, file: Path | None) -> str:
    """The text of a command that takes TEXT, - or --file PATH: exactly one of them (a file's last newline dropped)."""
    if (text is None) == (file is None):
        raise BadInput("give the text: as an argument, - for standard input, or --file PATH (one of them)")
    return drop_final_newline(read_file(file)) if file is not None else text  # type: ignore[return-value]


def drop_final_newline(text: str) -> str:
    """`text` without ONE trailing newline: `echo` and editors end every line with one, and a prompt ending in
    a newline asks for something else (the tiny model answers "9 + 0 = 9." instead of " Rome."). Like
    simonw/llm and ollama, only the last one goes; blank lines the user meant stay."""
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def text_argument(value: str | None) -> str | None:
    """Typer callback for PROMPT/TEXT: `-` means standard input; bad bytes are replaced with a warning."""
    if value is None:
        return None
    try:
        if value == STDIN:
            return drop_final_newline(read_stdin("standard input (PROMPT -)"))
        return clean(value, "the argument")
    except BadInput as exc:  # parsing happens before the command's own error handling
        raise typer.BadParameter(str(exc)) from None


def warn(message: str) -> None:
    """One line on stderr, where it is open."""
    if sys.stderr is not None:
        try:
            print(f"warning: {message}", file=sys.stderr)
        except OSError:
            pass
