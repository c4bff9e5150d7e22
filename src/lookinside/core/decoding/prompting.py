"""Text or chat messages -> input token ids. Chat templates are applied here only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.core import errors
from lookinside.core.rules import check_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = dict[str, str]


def chat_messages(prompt: str, system: str | None = None) -> list[Message]:
    """A one-turn conversation, with an optional system prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[Message], add_generation_prompt: bool = True) -> str:
    """The conversation as the model's chat template writes it."""
    if not getattr(tokenizer, "chat_template", None):
        raise errors.BadInput("this model's tokenizer has no chat template; drop --chat")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # a template is the model author's code (Jinja): any error it raises is theirs
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise errors.BadInput(f"this model's chat template failed to render ({type(exc).__name__}: {first})") from None


def encode_messages(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of a rendered conversation (the template itself places any BOS)."""
    text = render_chat(tokenizer, messages, add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: bool = False, system: str | None = None) -> list[int]:
    """Token ids for a plain prompt (with the tokenizer's BOS) or, with `chat`, a one-turn conversation."""
    check_prompt(prompt)
    if chat:
        return encode_messages(tokenizer, chat_messages(prompt, system))
    return list(tokenizer(prompt).input_ids)


def check_fits(n_prompt: int, context: int, new_tokens: int = 0) -> None:
    """Refuse a prompt that, with `new_tokens` more, would not fit in `context` positions."""
    if n_prompt + new_tokens > context:
        extra = f" plus {new_tokens} new tokens" if new_tokens else ""
        raise errors.ContextOverflow(
            f"the prompt is {n_prompt} tokens{extra}, more than the model's context of {context} tokens"
        )


def check_top_k(top_k: int, vocab_size: int, flag: str = "--top-k") -> None:
    """Refuse a --top-k (or `flag`) larger than the model's vocabulary (known only once it is loaded)."""
    if top_k > vocab_size:
        raise errors.BadInput(f"{flag} {top_k} is more than this model's vocabulary of {vocab_size:,} tokens")
