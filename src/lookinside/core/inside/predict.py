"""One forward pass -> the next-token distribution, with the shapes it went through.

The book's picture: input ids (1, n) -> the Transformer stack's last hidden state
(1, n, d_model) -> the LM head's logits (1, n, vocab) -> softmax at the last position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.core.decoding.detokenize import token_text
from lookinside.core.decoding.prompting import check_top_k
from lookinside.core.decoding.sampling import logits_to_probs, top_candidates
from lookinside.core.decoding.tokens import pieces
from lookinside.core.inside import passes
from lookinside.core.inside.hooks import head_rows
from lookinside.core.records import Candidate, NextToken

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.core.request import NextTokenRequest


def next_token(lm: LM, request: NextTokenRequest) -> NextToken:
    """Run the prompt once and rank the `request.top_k` most probable next tokens."""
    check_top_k(request.top_k, head_rows(lm.model))
    ids = passes.prompt_ids(lm, request.prompt, request.chat)
    out = passes.forward(lm, ids, output_hidden_states=True)
    last = out.logits[0, -1].float()  # (vocab,)
    probs = logits_to_probs(last)
    at_t = logits_to_probs(last, request.temperature) if request.temperature is not None else None
    top_ids, top_probs = top_candidates(probs, request.top_k)
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
    return NextToken(
        model=lm.name,
        prompt=request.prompt,
        tokens=tuple(pieces(lm.tokenizer, ids)),
        shapes={
            "input_ids": [1, len(ids)],
            "hidden_states": list(out.hidden_states[-1].shape),  # (1, n, d_model)
            "logits": list(out.logits.shape),  # (1, n, vocab)
        },
        top=top,
        temperature=request.temperature,
        context_length=lm.context_length,
    )
