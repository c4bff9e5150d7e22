"""One forward pass -> the next-token distribution, with the shapes it went through.

The book's picture: input ids (1, n) -> the Transformer stack's last hidden state
(1, n, d_model) -> the LM head's logits (1, n, vocab) -> softmax at the last position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lookinside.core import errors
from lookinside.core.detokenize import token_text
from lookinside.core.prompting import check_fits, check_prompt, check_top_k, encode_prompt
from lookinside.core.sampling import logits_to_probs, top_candidates

if TYPE_CHECKING:
    from lookinside.core.loading import LM


@dataclass(frozen=True)
class Token:
    """A prompt token: its id and its piece as the tokenizer names it."""

    id: int
    text: str


@dataclass(frozen=True)
class Candidate:
    """A possible next token."""

    rank: int
    id: int
    token: str
    prob: float
    logit: float
    prob_at_temperature: float | None = None


@dataclass(frozen=True)
class NextToken:
    """The next-token distribution for a prompt, and how it was computed."""

    model: str
    prompt: str
    tokens: list[Token]
    shapes: dict[str, list[int]]
    top: list[Candidate]
    temperature: float | None
    context_length: int


def next_token(lm: LM, prompt: str, top_k: int = 10, temperature: float | None = None, chat: bool = False) -> NextToken:
    """Run the prompt once and rank the `top_k` most probable next tokens."""
    ids = encode_prompt(lm.tokenizer, prompt, chat=chat)
    check_fits(len(ids), lm.context_length)
    check_top_k(top_k, lm.model.get_output_embeddings().weight.shape[0])
    input_ids = torch.tensor([ids], device=lm.device)  # (1, n)
    with torch.inference_mode():
        out = lm.model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    last = out.logits[0, -1].float()  # (vocab,)
    probs = logits_to_probs(last)
    at_t = logits_to_probs(last, temperature) if temperature is not None else None
    top_ids, top_probs = top_candidates(probs, top_k)
    top = [
        Candidate(
            rank=rank,
            id=token_id,
            token=token_text(lm.tokenizer, token_id),
            prob=prob,
            logit=float(last[token_id]),
            prob_at_temperature=None if at_t is None else float(at_t[token_id]),
        )
        for rank, (token_id, prob) in enumerate(zip(top_ids, top_probs), start=1)
    ]
    pieces = lm.tokenizer.convert_ids_to_tokens(ids)
    return NextToken(
        model=lm.name,
        prompt=prompt,
        tokens=[Token(id=i, text=str(p)) for i, p in zip(ids, pieces)],
        shapes={
            "input_ids": list(input_ids.shape),
            "hidden_states": list(out.hidden_states[-1].shape),  # (1, n, d_model)
            "logits": list(out.logits.shape),  # (1, n, vocab)
        },
        top=top,
        temperature=temperature,
        context_length=lm.context_length,
    )


def check_request(prompt: str, top_k: int, temperature: float | None) -> None:
    """Refuse bad arguments before any model is loaded."""
    check_prompt(prompt)
    if top_k <= 0:
        raise errors.BadInput(f"--top-k must be a positive number, not {top_k}")
    if temperature is not None and not 0 <= temperature < float("inf"):
        raise errors.BadInput(f"--temperature must be >= 0 and finite (0 is greedy), not {temperature}")
