"""A chat as plain data: the messages, and what fits in the model's context.

`Conversation` holds the system prompt and the user/assistant turns; `window` says which turns
still go to the model after the oldest were dropped to fit (they stay in the transcript). Tokens
are counted through the model's chat template (`core.decoding.prompting`), so the count is what
the model sees. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.chat.defaults import ChatSettings
from lookinside.core.decoding.prompting import Message, encode_messages

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


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

    def add(self, role: str, content: str, cut: bool = False, tokens: list[list[Any]] | None = None,
            steer: str | None = None) -> None:
        """Append a turn; `cut` marks a reply stopped before its end; `tokens` are a reply's tokens with their
        probabilities (core/chat/journal.token_record); `steer` says how the reply was steered, if it was."""
        self.messages.append({"role": role, "content": content, **({"cut": True} if cut else {}),
                              **({"steer": steer} if steer else {}), **({"tokens": tokens} if tokens else {})})

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
