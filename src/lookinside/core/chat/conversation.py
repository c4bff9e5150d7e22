"""A chat as plain data: the messages, the settings, and what fits in the model's context.

`Conversation` holds the system prompt and the user/assistant turns; `window` says
which turns still go to the model after the oldest were dropped to fit (they stay
in the transcript). Tokens are counted through the model's chat template
(`core.decoding.prompting`), so the count is what the model sees. Transcripts are JSON,
written atomically (a temp file, then `os.replace`), and export to markdown.
Nothing here imports torch.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.backends.seam import Resources
from lookinside.core.chat.journal import fold
from lookinside.core.chat.transcript_fields import checked
from lookinside.core.decoding.prompting import Message, encode_messages
from lookinside.core.decoding.sampling import FIELD, FIELDS, SamplingParams
from lookinside.core.finite import dumps

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedTokenizerBase

    from lookinside.core.records import Step

TRANSCRIPT_VERSION = 1
# When the model's generation config says nothing about sampling: llama.cpp's and Ollama's
# usual chat settings, so that /retry gives a different answer.
CHAT_DEFAULT = SamplingParams(temperature=0.7, top_p=0.9)
DEFAULT_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class ChatSettings:
    """How replies are generated: sampling, length, and whether old turns may be dropped."""

    params: SamplingParams = CHAT_DEFAULT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    trim: bool = True
    source: str = "lookinside's chat default"  # where the sampling defaults came from, for /show

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise errors.BadInput("max_new_tokens must be >= 1")

    def updated(self, name: str, value: str) -> ChatSettings:
        """A copy with one setting changed from its text form, as `/set NAME VALUE` gives it."""
        if name == "max_new_tokens":
            try:
                return replace(self, max_new_tokens=int(value))
            except ValueError:
                raise errors.BadInput(f"max_new_tokens takes an integer, not {value!r}") from None
        if name not in SETTABLE:
            raise errors.BadInput(f"unknown setting {name!r}: one of {', '.join(SETTABLE)}")
        return replace(self, params=self.params.updated(**{name: FIELD[name].parse(value)}))

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON object."""
        return {"params": self.params.to_json(), "max_new_tokens": self.max_new_tokens, "trim": self.trim}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChatSettings:
        """Settings from `to_json`'s object (validated again)."""
        return cls(params=SamplingParams.from_json(data.get("params", {})),
                   max_new_tokens=int(data.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                   trim=bool(data.get("trim", True)), source="the loaded transcript")


SETTABLE = (*(f.name for f in FIELDS if f.settable), "max_new_tokens")


def chat_defaults(generation_config: GenerationConfig | None,
                  given: dict[str, Any] | None = None) -> tuple[SamplingParams, str]:
    """Sampling defaults from the model's generation config, with the user's `given` values over them, and a phrase
    saying where the defaults came from. A bad value in the config (that `given` does not replace) is the file's."""
    given = given or {}
    do_sample = getattr(generation_config, "do_sample", None)
    penalty = getattr(generation_config, "repetition_penalty", None) or 1.0
    if do_sample is None:
        chosen, source = {**CHAT_DEFAULT.to_json()}, "lookinside's chat default, as the model's generation config sets none"
    elif not do_sample:
        chosen, source = {"temperature": 0}, "the model's generation config (greedy)"
    else:
        found = {f.name: getattr(generation_config, f.name, None) for f in FIELDS if f.from_generation_config}
        chosen, source = {name: value for name, value in found.items() if value is not None}, "the model's generation config"
    try:
        return SamplingParams.from_json({**chosen, "repetition_penalty": penalty, **given}), source
    except errors.BadInput as exc:  # the user's values were checked before: this is the file's mistake
        from lookinside.core.model.checks import generation_config_error

        raise generation_config_error(exc) from None


def chat_settings(generation_config: GenerationConfig | None, overrides: dict[str, Any],
                  max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, trim: bool = True) -> ChatSettings:
    """The model's defaults with the options the user gave (None means not given) laid over them."""
    given = {name: value for name, value in overrides.items() if value is not None}
    params, source = chat_defaults(generation_config, given)
    if given:
        source = f"{source}, then your options"
    return ChatSettings(params=params, max_new_tokens=max_new_tokens, trim=trim, source=source)


@dataclass(frozen=True)
class ChatRequest:
    """`chat` and `generate`'s sampling flags (None: not given) and length, checked once, before any loading.

    `settings` lays them over a model's defaults once the model (or server) is known.
    """

    overrides: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    trim: bool = True

    def __post_init__(self) -> None:
        for name, value in self.overrides.items():
            if name not in FIELD:
                raise errors.BadInput(f"unknown sampling setting {name!r}: one of {', '.join(FIELD)}")
            if value is not None:
                FIELD[name].check(value)
        if self.max_new_tokens < 1:
            raise errors.BadInput("max_new_tokens must be >= 1")

    def settings(self, generation_config: GenerationConfig | None) -> ChatSettings:
        """The model's defaults with these flags laid over them."""
        return chat_settings(generation_config, self.overrides, self.max_new_tokens, self.trim)


@dataclass
class Conversation:
    """The system prompt and the turns; messages before `window` are no longer sent to the model."""

    system: str | None = None
    messages: list[Message] = field(default_factory=list)
    settings: ChatSettings = field(default_factory=ChatSettings)
    window: int = 0

    def as_messages(self) -> list[Message]:
        """What the chat template gets: the system prompt, then the turns still in the window."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": m["role"], "content": m["content"]} for m in self.messages[self.window :]]

    def add(self, role: str, content: str, cut: bool = False, tokens: list[list[Any]] | None = None) -> None:
        """Append a turn; `cut` marks a reply stopped before its end; `tokens` are a reply's [text, probability]s."""
        self.messages.append({"role": role, "content": content, **({"cut": True} if cut else {}),
                              **({"tokens": tokens} if tokens else {})})

    @property
    def last_reply(self) -> Message | None:
        """The last assistant message, if the conversation ends with one."""
        return self.messages[-1] if self.messages and self.messages[-1]["role"] == "assistant" else None

    def pop_reply(self) -> Message | None:
        """Remove and return the last assistant message (for /retry)."""
        return self.messages.pop() if self.last_reply else None

    def undo(self) -> int:
        """Remove the last exchange (a user message and its reply); how many messages went."""
        count = 0
        if self.last_reply:
            self.messages.pop()
            count += 1
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages.pop()
            count += 1
        self.window = min(self.window, len(self.messages))
        return count

    def clear(self) -> None:
        """Drop every turn; keep the system prompt and the settings."""
        self.messages.clear()
        self.window = 0


@dataclass(frozen=True)
class Fitted:
    """The prompt for the next reply, and what was dropped to make it fit.

    `messages` (and `continuation`, the reply being continued) are what a server's chat endpoint
    takes; `ids` is the same prompt through the local chat template (None where nothing counts them).
    """

    ids: list[int] | None
    dropped_turns: int
    dropped_tokens: int
    messages: list[Message] = field(default_factory=list)
    continuation: str | None = None


def count_tokens(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> int:
    """Tokens the conversation takes in the chat template, with the assistant's header (0 when it is empty)."""
    messages = conversation.as_messages()
    return len(encode_messages(tokenizer, messages)) if messages else 0


def fit(tokenizer: PreTrainedTokenizerBase, conversation: Conversation, context: int,
        continuation: str | None = None) -> Fitted:
    """The next prompt's ids, dropping the oldest turns (never the system prompt) while it does not fit.

    With `continuation`, the last assistant message is left out of the template and its
    text follows the assistant header, so the model goes on from where it stopped.
    With trimming off, a prompt that does not fit raises ContextOverflow instead.
    """
    budget = context - conversation.settings.max_new_tokens
    before = conversation.window
    first_ids = ids = _prompt_ids(tokenizer, conversation, continuation)
    while len(ids) > budget:
        if not conversation.settings.trim:
            raise errors.ContextOverflow(_overflow(len(ids), conversation, context, "trimming is off (--no-trim)"))
        if not _drop_oldest_turn(conversation, keep=2 if continuation is not None else 1):
            raise errors.ContextOverflow(_overflow(len(ids), conversation, context, "nothing older is left to drop"))
        ids = _prompt_ids(tokenizer, conversation, continuation)
    dropped = conversation.window - before
    return Fitted(ids=ids, dropped_turns=dropped, dropped_tokens=len(first_ids) - len(ids),
                  messages=conversation.as_messages(), continuation=continuation)


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, conversation: Conversation, continuation: str | None) -> list[int]:
    messages = conversation.as_messages()
    if continuation is None:
        return encode_messages(tokenizer, messages)
    # The template has no "go on" form, so the reply so far is tokenized after the assistant header.
    head = encode_messages(tokenizer, messages[:-1])
    return head + list(tokenizer(continuation, add_special_tokens=False).input_ids)


def _drop_oldest_turn(conversation: Conversation, keep: int) -> bool:
    """Move the window past the oldest user turn and its reply; False when only `keep` messages are left."""
    live = conversation.messages[conversation.window :]
    if len(live) <= keep:
        return False
    step = 2 if len(live) > keep + 1 and live[1]["role"] == "assistant" else 1
    conversation.window += step
    return True


def _overflow(n: int, conversation: Conversation, context: int, why: str) -> str:
    new = conversation.settings.max_new_tokens
    return (f"the conversation is {n} tokens + {new} new, more than the context of {context}; {why}: "
            f"try /undo, /clear or /set max_new_tokens")


@dataclass(frozen=True)
class ReplyStats:
    """What one reply cost: tokens in and out, time to first token, decode speed, peak memory."""

    prompt_tokens: int | None  # None where the backend does not count them
    generated_tokens: int
    ttft_s: float
    decode_tokens_per_s: float | None
    context_used: int | None
    context_length: int | None
    seed: int | None
    peak_memory_bytes: int | None = None  # CUDA only
    threads: int | None = None  # torch's CPU threads (CPU only)
    quantized: str | None = None  # e.g. "int8 weights 1.8 MiB (from 4.0 MiB)"
    steer: str | None = None  # what /steer adds, while it is on


def reply_stats(steps: Sequence[Step], prompt_tokens: int | None, context_length: int | None, seed: int | None,
                used: Resources | None = None) -> ReplyStats:
    """Stats from a reply's steps, through `Generation`'s timing (step 0 holds the prefill, so it is not decode)."""
    from lookinside.core.records import Generation

    run = Generation(prompt_ids=[], steps=list(steps), seed=seed)
    used = used or Resources()
    return ReplyStats(
        prompt_tokens=prompt_tokens,
        generated_tokens=len(run.steps),
        ttft_s=run.ttft_s or 0.0,
        decode_tokens_per_s=run.decode_tok_s,
        context_used=prompt_tokens + len(run.steps) if prompt_tokens is not None else None,
        context_length=context_length,
        seed=seed,
        peak_memory_bytes=used.peak_memory_bytes,
        threads=used.threads,
        quantized=used.quantized,
    )


def write_transcript(conversation: Conversation, path: Path, model: str, make_parents: bool = False) -> Path:
    """Write the transcript as JSON atomically: a crash leaves the old file or the new one, never half."""
    data = {
        "version": TRANSCRIPT_VERSION,
        "model": model,
        "system": conversation.system,
        "messages": conversation.messages,
        "window": conversation.window,
        "settings": conversation.settings.to_json(),
    }
    path = path.expanduser()
    write_atomically(path, dumps(data, indent=2) + "\n", make_parents)  # strict JSON: a NaN is null, said in "nulls"
    return path


STDOUT_NAMES = ("-", "/dev/stdout")  # where a save path means standard output


def write_atomically(path: Path, text: str, make_parents: bool = False) -> None:
    """Write `text` to a temp file beside `path`, flush it to disk, then rename it over `path`; or refuse whole.

    A symlink is followed: its target is replaced, the link stays. `-` and /dev/stdout mean standard
    output. What is not a regular file is never replaced: a character device (/dev/null, a terminal)
    or a FIFO with a reader is written to directly; a block device, a socket, or a FIFO nobody reads
    is refused. A missing directory is refused unless `make_parents`; every failure is a BadInput
    naming the path.
    """
    if str(path) in STDOUT_NAMES:
        _write_stdout(text)
        return
    target = Path(os.path.realpath(path))  # a link's target (a chain of links too); `path` itself otherwise
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # not there yet (a parent that is a file is said below)
        mode = None
    except OSError as exc:
        raise errors.BadInput(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise errors.BadInput(f"cannot write {path}: it is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        _write_special(path, target, mode, text)
        return
    if not target.parent.is_dir():
        if target.parent.exists():
            raise errors.BadInput(f"cannot write {path}: {target.parent} is a file, not a directory")
        if not make_parents:
            raise errors.BadInput(f"cannot write {path}: there is no directory {target.parent} (create it first)")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.BadInput(f"cannot create {target.parent}: {exc.strerror or exc}") from None
    try:
        _replace_with(target, text, None if mode is None else stat.S_IMODE(mode))
    except OSError as exc:
        raise errors.BadInput(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None


def _write_stdout(text: str) -> None:
    import sys

    if sys.stdout is None:
        raise errors.BadInput("cannot write to standard output: it is closed")
    sys.stdout.write(text)
    sys.stdout.flush()


def _write_special(path: Path, target: Path, mode: int, text: str) -> None:
    """Write to a device or FIFO in place (never replace the node), or refuse what cannot take a file."""
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "a block device" if stat.S_ISBLK(mode) else "a socket"
        raise errors.BadInput(f"cannot write {path}: it is {kind}, not a file; nothing was written")
    try:
        fd = os.open(target, os.O_WRONLY | (os.O_NONBLOCK if stat.S_ISFIFO(mode) else 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO with no reader: writing would wait forever
            raise errors.BadInput(f"cannot write {path}: it is a FIFO and nothing reads it; nothing was written") from None
        raise errors.BadInput(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None
    try:
        os.set_blocking(fd, True)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    except OSError as exc:
        raise errors.BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _replace_with(path: Path, text: str, mode: int | None = None) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    # mkstemp's 0600 is for secrets; these are the user's ordinary files (a replaced file keeps its mode)
    os.chmod(temp, mode if mode is not None else 0o666 & ~umask)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_transcript(path: Path) -> tuple[Conversation, str | None]:
    """A conversation saved by `write_transcript`, and the model it was held with."""
    path = path.expanduser()
    try:
        if path.exists() and not path.is_file():  # a directory, or a FIFO that would wait forever for a writer
            raise errors.BadInput(f"{path} is not a file: give a transcript written by /save")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.BadInput(f"no transcript at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.BadInput(f"{path} is not a readable JSON transcript ({exc})") from None
    version = data.get("version") if isinstance(data, dict) else None
    if version is not None and version != TRANSCRIPT_VERSION:
        raise errors.BadInput(f"{path} is a transcript of version {version!r}; this lookinside reads version "
                              f"{TRANSCRIPT_VERSION}")
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
        lines += [f"## {title}{cut}", "", message["content"], ""]
    return "\n".join(lines)


def export_markdown(conversation: Conversation, path: Path, model: str, make_parents: bool = False) -> Path:
    """Write `to_markdown` to `path` (which must end in .md), atomically."""
    path = path.expanduser()
    if path.suffix.lower() not in (".md", ".markdown"):
        raise errors.BadInput(f"export to a markdown file: {path.name} should end in .md (or .html or .svg for "
                              "a picture with each token coloured)")
    write_atomically(path, to_markdown(conversation, model), make_parents)
    return path


def continued(path: Path, system: str | None, overrides: dict[str, Any]) -> tuple[Conversation, str | None]:
    """A saved conversation to go on with: its system prompt and settings, unless the user gave new ones."""
    conversation, model = read_transcript(path)
    if system is not None:
        conversation.system = system
    given = {name: value for name, value in overrides.items() if value is not None}
    if given:
        settings = conversation.settings
        conversation.settings = replace(settings, params=settings.params.updated(**given),
                                        source=f"{settings.source}, then your options")
    return conversation, model
