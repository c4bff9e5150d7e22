"""Pure views for `llm chat`: the stats line, the context meter, /show, /why and /help.

Each function turns plain data into a Rich renderable (or a line of markup); the REPL prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from lookinside.core.chat.conversation import Conversation
from lookinside.core.chat.defaults import ChatSettings
from lookinside.core.chat.stats import ReplyStats
from lookinside.core.records import ModelFacts
from lookinside.ui.text import bar, prob_style, visible


def stats_line(stats: ReplyStats) -> str:
    """One dim line: tokens in and out, time to first token, decode speed, context, CPU threads, seed, CUDA peak."""
    prompt = f"{stats.prompt_tokens} prompt + " if stats.prompt_tokens is not None else ""
    parts = [f"{prompt}{stats.generated_tokens} generated tokens", f"TTFT {stats.ttft_s * 1000:.0f} ms"]
    if stats.decode_tokens_per_s is not None:
        parts.append(f"{stats.decode_tokens_per_s:.1f} tok/s")
    if stats.context_used is not None and stats.context_length is not None:
        parts.append(f"context {stats.context_used}/{stats.context_length}")
    if stats.threads is not None:
        parts.append(f"{stats.threads} CPU thread{'s' * (stats.threads != 1)}")
    if stats.seed is not None:
        parts.append(f"seed {stats.seed}")
    if stats.quantized is not None:
        parts.append(stats.quantized)
    if stats.peak_memory_bytes is not None:
        parts.append(f"peak CUDA {stats.peak_memory_bytes / 2**30:.2f} GiB")
    if stats.steer is not None:
        parts.append(escape(stats.steer))
    return "[dim]" + " · ".join(parts) + "[/]"


def context_meter(used: int, context: int, max_new_tokens: int, dropped: int) -> Text:
    """Tokens used against the context, with room kept for the next reply."""
    text = Text()
    text.append(bar(used / context if context else 0, 30), style="cyan")
    text.append(f" {used}/{context} tokens ({used / context:.0%})" if context else f" {used} tokens")
    text.append(f"; the next reply may add up to {max_new_tokens}", style="dim")
    if dropped:
        text.append(f"; {dropped} older messages no longer sent (dropped to fit)", style="yellow")
    return text


def show_view(facts: ModelFacts, settings: ChatSettings, system: str | None) -> Group:
    """/show: the model, its end tokens and chat template, and the chat's settings."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    unknown = "[dim]not known (the server does not say)[/]"
    parameters = facts.parameters
    rows = [
        ("model", f"{facts.name} ({facts.source})" if facts.source and facts.source != facts.name else facts.name),
        ("parameters", unknown if parameters is None else f"{parameters:,} ({parameters / 1e9:.2f} B)"
         if parameters >= 10**8 else f"{parameters:,}"),
        ("dtype", facts.dtype or unknown),
        ("device", facts.device or unknown),
        ("attention", facts.attention or unknown),
        ("context length", f"{facts.context_length} tokens" if facts.context_length is not None else unknown),
        ("end tokens", ", ".join(f"{tid} {visible(text)}" for tid, text in facts.end_tokens) or "none"),
        ("sampling", settings.params.describe() + f"  [dim](defaults: {escape(settings.source)})[/]"),
        ("max_new_tokens", str(settings.max_new_tokens)),
        ("trimming", "on: the oldest turns are dropped to fit" if settings.trim else "off (--no-trim): refuse"),
        ("system prompt", escape(system) if system else "[dim]none[/]"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    template = facts.chat_template or "(this tokenizer has no chat template)"
    return Group(table, Text("chat template", style="bold"), Syntax(template, "jinja", word_wrap=True))


@dataclass(frozen=True)
class WhyRow:
    """One position of a reply: the token chosen, its probability and rank, and the other candidates."""

    chosen: str
    prob: float
    rank: int | None  # None for a reply loaded from a file that kept no ranks
    alternatives: Sequence[tuple[str, float]]


def transcript_view(conversation: Conversation, model: str) -> Group:
    """The whole conversation as /export draws it in HTML: each reply's tokens coloured by their probability."""
    from lookinside.ui.compare import legend  # deferred: rich

    parts: list[RenderableType] = [Text.assemble(("Chat with ", "bold"), (model, "bold cyan")),
                        Text(f"Settings: {conversation.settings.params.describe()}, "
                             f"max_new_tokens={conversation.settings.max_new_tokens}", style="dim")]
    if conversation.system:
        parts += [Text(), Text("System", style="bold magenta"), Text(conversation.system)]
    for message in conversation.messages:
        title = "User" if message["role"] == "user" else "Assistant" + (" (cut)" if message.get("cut") else "")
        parts += [Text(), Text(title, style="bold blue" if message["role"] == "user" else "bold green")]
        if message.get("steer"):
            parts.append(Text(f"steered: {message['steer']}; not the model's plain answer", style="bold magenta"))
        tokens = message.get("tokens")
        if message["role"] == "assistant" and tokens:
            text = Text()
            for i, (piece, prob, *_) in enumerate(tokens):  # [text, prob, ...]: core/chat/journal.token_record
                text.append(piece.lstrip() if i == 0 else piece, style=prob_style(prob) if prob is not None else "")
            parts.append(text)
        else:
            parts.append(Text(message["content"]))
    parts += [Text(), legend()]
    return Group(*parts)


def why_view(rows: Sequence[WhyRow]) -> Table:
    """/why: for each position of the last reply, the token chosen, its probability, and the alternatives."""
    table = Table(title="why these tokens: the last reply, position by position", title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("chosen")
    table.add_column("prob", justify="right")
    table.add_column("rank", justify="right")
    table.add_column("other candidates (probability)")
    for position, row in enumerate(rows):
        alternatives = Text()
        for text, p in row.alternatives:
            if alternatives:
                alternatives.append("  ")
            alternatives.append(visible(text), style=prob_style(p))
            alternatives.append(f" {probability(p)}", style="dim")
        table.add_row(str(position), Text(visible(row.chosen), style=prob_style(row.prob)), probability(row.prob),
                      "" if row.rank is None else str(row.rank), alternatives)
    return table


def probability(p: float) -> str:
    """A probability that stays readable when tiny: 0.997, 0.042, 3.1e-05."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def help_view(commands: Sequence[tuple[str, str]]) -> Table:
    """/help: each command and what it does, then the keys."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for usage, what in commands:
        table.add_row(usage, what)
    table.add_row("", "")
    for key, what in KEYS:
        table.add_row(key, what)
    return table


KEYS = (
    ("Enter", "send the message"),
    ("Esc Enter / Alt-Enter", "new line; a paste is sent as one message; or wrap lines in \"\"\" … \"\"\""),
    ("Up / Down, Ctrl-R", "earlier messages; search them"),
    ("Ctrl-C", "stop the reply (it is kept, marked as cut); clear the line; at an empty prompt, how to leave"),
    ("Ctrl-D", "leave"),
)
