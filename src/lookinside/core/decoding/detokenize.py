"""Token ids -> text, in exactly one place.

`IncrementalDecoder` turns a stream of ids into text deltas that never show half
a character: a byte-fallback emoji is four tokens, and nothing is emitted until
the fourth arrives. SentencePiece's leading "▁" spacing comes out right because
each delta is decoded with a few tokens of context before it. Invalid UTF-8 (a
random model can emit any byte piece) is never an error: after four held tokens,
or at `flush`, it comes out as U+FFFD. `StopStrings` holds back text that might
be the start of a stop string, so a stop string never reaches the screen.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REPLACEMENT = "\ufffd"
BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
# A UTF-8 character is at most 4 bytes; past that a trailing U+FFFD is a real invalid byte.
MAX_HELD_TOKENS = 4
CONTEXT_TOKENS = 4


class IncrementalDecoder:
    """Feed ids one at a time; get back only complete new text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context: list[int] | None = None,
                 skip_special: bool = False) -> None:
        self.tokenizer = tokenizer
        # After a special token (a chat template's <|assistant|>) the text starts afresh: SentencePiece's "▁" on
        # the first word is its prefix space, not text, so the reply is decoded as HF and vLLM decode it alone
        # ("The capital...", not " The capital..."). After ordinary text the context keeps the space (" Paris").
        context = [] if context and context[-1] in special_ids(tokenizer) else context
        self.skip_special = skip_special  # vLLM's skip_special_tokens: chat markers left out of the text
        self.ids: list[int] = list(context or [])[-CONTEXT_TOKENS:]
        self.prefix_offset = 0  # start of the context window used for decoding
        self.read_offset = len(self.ids)  # ids before this are already emitted

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes ("" while a character is unfinished)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        unfinished = full.endswith(REPLACEMENT) or len(full) <= len(prefix)
        if unfinished and len(self.ids) - self.read_offset < MAX_HELD_TOKENS:
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return full[len(prefix) :]

    def flush(self) -> str:
        """Whatever is still held back (an unfinished character shows as U+FFFD)."""
        if self.read_offset == len(self.ids):
            return ""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        self.read_offset = len(self.ids)
        return full[len(prefix) :]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special, clean_up_tokenization_spaces=False)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The ids of the tokenizer's special tokens (<s>, <|end|>, a chat template's role tags)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return frozenset(tokenizer.all_special_ids) | {i for i, token in added.items() if getattr(token, "special", False)}


def decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """All of `ids` as text, through the same decoder the stream uses."""
    decoder = IncrementalDecoder(tokenizer)
    return "".join(decoder.push(i) for i in ids) + decoder.flush()


def token_text(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str:
    """The text one token stands for, with its leading space; a lone byte piece as `<0xF0>`."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if isinstance(piece, str) and BYTE_PIECE.match(piece):
        return piece
    text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if REPLACEMENT in text and isinstance(piece, str):
        return piece
    if isinstance(piece, str) and piece.startswith("▁") and not text.startswith(" "):
        text = " " + text  # SentencePiece decoders strip the space of a sequence's first piece
    return text


class StopStrings:
    """Finds the first stop string in streamed text; holds back any tail that could begin one."""

    def __init__(self, stops: tuple[str, ...] | list[str] = (), include: bool = False) -> None:
        self.stops = tuple(s for s in stops if s)
        self.include = include  # keep the stop string in the text (vLLM's include_stop_str_in_output)
        self.pending = ""  # decoded text not yet released: it may be the start of a stop string
        self.stopped = False
        self.matched: str | None = None  # the stop string found

    def push(self, text: str) -> str:
        """Add decoded text; return what is safe to show (cut before a stop string once one is found)."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.pending += text
        hits = [(at, stop) for at, stop in ((self.pending.find(stop), stop) for stop in self.stops) if at >= 0]
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])
            self.stopped = True
            out, self.pending = self.pending[: at + (len(self.matched) if self.include else 0)], ""
            return out
        hold = self._held_tail()
        out, self.pending = self.pending[: len(self.pending) - hold], self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        """The held-back tail, once no more text will come."""
        out, self.pending = self.pending, ""
        return out

    def _held_tail(self) -> int:
        # The longest suffix of `pending` that is a proper prefix of some stop string.
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest
