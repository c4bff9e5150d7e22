"""Text -> tokens as the model sees them: id, piece, and what kind of token it is.

`llm tokens` needs only the tokenizer (`loading.load_tokenizer`), so it reads no weights.
Byte-fallback pieces (`<0xF0>`) are reported as bytes, and a run of them is
decoded together, since one emoji is four tokens and none of them is a character.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lookinside.core.decoding.detokenize import BYTE_PIECE, token_text
from lookinside.core.decoding.prompting import chat_messages, encode_prompt, render_chat
from lookinside.core.records import Piece, Tokenization

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lookinside.core.request import TokensRequest


@dataclass(frozen=True)
class TokenizerOnly:
    """A model's name and tokenizer, without its weights: all `llm tokens` loads."""

    name: str
    tokenizer: PreTrainedTokenizerBase


def tokenize(name: str, tokenizer: PreTrainedTokenizerBase, text: str, chat: bool = False) -> Tokenization:
    """The tokens a prompt becomes (the tokenizer's BOS included; with `chat`, the template's tokens)."""
    ids = encode_prompt(tokenizer, text, chat=chat)
    rendered = render_chat(tokenizer, chat_messages(text)) if chat else None
    return Tokenization(
        model=name, text=text, chat=chat, rendered=rendered,
        tokens=tuple(pieces(tokenizer, ids)), vocab_size=len(tokenizer),
    )


def tokens_of(lm: Any, request: TokensRequest) -> Tokenization:
    """`llm tokens` on a model, or on anything with a `name` and a `tokenizer`."""
    return tokenize(lm.name, lm.tokenizer, request.text, chat=request.chat)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids of special tokens: BOS/EOS/UNK/PAD and added control tokens such as <|user|>."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return ids | {i for i, added in decoder.items() if getattr(added, "special", False)}


def pieces(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[Piece]:
    """Describe each id; byte runs get the text they decode to on their last piece."""
    special = special_ids(tokenizer)
    raw = tokenizer.convert_ids_to_tokens(ids)
    out: list[Piece] = []
    for index, (token_id, piece) in enumerate(zip(ids, raw)):
        piece = str(piece)
        if BYTE_PIECE.match(piece):
            out.append(Piece(index, token_id, piece, piece, "byte", byte=int(piece[3:5], 16)))
        else:
            kind = "special" if token_id in special else "text"
            out.append(Piece(index, token_id, piece, token_text(tokenizer, token_id), kind))
    return _join_byte_runs(out)


def _join_byte_runs(tokens: list[Piece]) -> list[Piece]:
    """Decode each maximal run of byte pieces as UTF-8 and put the result on its last piece."""
    result = list(tokens)
    start = None
    for i, token in enumerate([*tokens, None]):
        if token is not None and token.kind == "byte":
            start = i if start is None else start
            continue
        if start is not None:
            run = bytes(t.byte or 0 for t in tokens[start:i])
            result[i - 1] = replace(result[i - 1], joined=run.decode("utf-8", errors="replace"))
            start = None
    return result

