"""Token ids -> text, in exactly one place.

`IncrementalDecoder` turns a stream of ids into text deltas that never show half
a character: a byte-fallback emoji is four tokens, and nothing is emitted until
the fourth arrives. SentencePiece's leading "▁" spacing comes out right because
each delta is decoded with a few tokens of context before it.
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

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context: list[int] | None = None) -> None:
        self.tokenizer = tokenizer
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
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


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
