"""Two next-token distributions -> a `Shift`: both tables, KL(before || after), the top token's fate."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from lookinside.core.decoding.detokenize import token_text
from lookinside.core.inside.interventions.records import Shift
from lookinside.core.records import Candidate

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM


def candidates(lm: LM, logits: torch.Tensor, k: int) -> tuple[Candidate, ...]:
    """The k most probable next tokens of one position's logits (vocab,)."""
    probs = torch.softmax(logits.float(), dim=-1)  # (vocab,)
    values, ids = probs.topk(min(k, probs.shape[-1]))
    return tuple(Candidate(rank, int(i), token_text(lm.tokenizer, int(i)), float(p), logit=float(logits[int(i)]))
                 for rank, (p, i) in enumerate(zip(values.tolist(), ids.tolist()), start=1))


def kl_divergence(before: torch.Tensor, after: torch.Tensor) -> tuple[float | None, str | None]:
    """KL(before || after) in nats from two logit vectors (vocab,), or None and why when it is not finite."""
    logp = torch.log_softmax(before.double(), dim=-1)
    logq = torch.log_softmax(after.double(), dim=-1)
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))  # 0 log 0 = 0
    kl = float(terms.sum())
    if not math.isfinite(kl):
        return None, "not finite: the intervention gives zero probability to a token the model predicted"
    return max(kl, 0.0), None  # rounding can leave -1e-17 for identical distributions


def shift(lm: LM, before: torch.Tensor, after: torch.Tensor, k: int) -> Shift:
    """How one position's next-token distribution moved: logits (vocab,) before and after."""
    top = int(before.argmax())
    after_probs = torch.softmax(after.float(), dim=-1)  # (vocab,)
    kl, note = kl_divergence(before, after)
    return Shift(
        before=candidates(lm, before, k),
        after=candidates(lm, after, k),
        kl=kl,
        kl_note=note,
        top_after_prob=float(after_probs[top]),
        top_after_rank=int((after_probs > after_probs[top]).sum()) + 1,
    )
