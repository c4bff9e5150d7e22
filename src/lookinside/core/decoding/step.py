"""What every decoding step reads of the model and keeps of its logits, shared by the one loop (generate.py), its
compiled step (compiled.py) and the batch (batch.py): the name a model's forward takes its cache by, and the
observation row (the token, its log-probability and rank, the top alternatives)."""

from __future__ import annotations

import functools
import inspect

import torch

TOP_ALTERNATIVES = 5


def observation(logits: torch.Tensor, token: torch.Tensor, alternatives: int = TOP_ALTERNATIVES) -> torch.Tensor:
    """[token, log p, rank, top ids..., top log ps...] as one float64 row (compiled with the step under --compile).

    # (vocab,), (1,) -> (3 + 2k,)
    """
    # log p = logit - logsumexp: one reduction over the vocab instead of a whole log-softmax tensor.
    logits = logits.float()  # (vocab,)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (1,)
    chosen = logits[token]  # (1,)
    rank = (logits > chosen).sum().unsqueeze(0) + 1  # (1,)
    top_logits, top_ids = logits.topk(min(alternatives, logits.shape[-1]))  # (k,), (k,)
    chosen, top_logp = chosen - lse, top_logits - lse  # (1,), (k,)
    return torch.cat([token.double(), chosen.double(), rank.double(), top_ids.double(), top_logp.double()])


@functools.cache
def forward_parameters(forward_type: type) -> frozenset[str]:
    """The names a model class's forward takes (read once per class: inspect.signature is slow and does not trace)."""
    return frozenset(inspect.signature(forward_type.forward).parameters)


def cache_argument(model: torch.nn.Module) -> str:
    """`cache` in newer transformers 5 releases, `past_key_values` before them and in remote code."""
    return "cache" if "cache" in forward_parameters(type(model)) else "past_key_values"
