"""The logit lens: read the residual stream after every block as if it were the last.

Block i's output goes through the model's own final norm and LM head, giving the
next-token distribution the model "has in mind" at that depth (nostalgebraist, 2020).
The stream is read with hooks (the input of block 0, then each block's output), not
from `hidden_states`: transformers returns the last of those after the final norm,
and norming it twice would be wrong. The last row therefore equals the real logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lookinside.core import errors
from lookinside.core.decoding.detokenize import token_text
from lookinside.core.decoding.prompting import check_top_k
from lookinside.core.decoding.tokens import pieces
from lookinside.core.inside import passes
from lookinside.core.inside.hooks import find_final_norm, find_lm_head, head_device, head_rows, residual_stream
from lookinside.core.records import Candidate, LensRow, LogitLens, Piece  # noqa: F401  (the records live there)

if TYPE_CHECKING:
    from torch import nn

    from lookinside.core.model.loading import LM
    from lookinside.core.request import LensRequest


def logit_lens(lm: LM, request: LensRequest) -> LogitLens:
    """Run the prompt once and read every depth's residual stream through the final norm and LM head."""
    check_top_k(request.top_k, head_rows(lm.model))
    ids = passes.prompt_ids(lm, request.prompt, request.chat)
    if not -len(ids) <= request.position < len(ids):
        raise errors.BadInput(
            f"--position must be between 0 and {len(ids) - 1} (or -1 for the last), not {request.position}")
    position, all_positions = request.position % len(ids), request.all_positions
    with residual_stream(lm.model) as stream:
        passes.forward(lm, ids)
    norm = find_final_norm(lm.model)
    with torch.inference_mode():
        device = head_device(lm.model)  # blocks may sit on several devices (--device-map)
        states = torch.stack([s[0].to(device) for s in stream])  # (layers + 1, n, d_model)
        probs = lens_probs(lm.model, norm, states if all_positions else states[:, position : position + 1])
    at = probs[:, position if all_positions else 0]  # (layers + 1, vocab)
    answer_id = int(at[-1].argmax())
    rows = tuple(_row(lm, depth, dist, answer_id, request.top_k) for depth, dist in enumerate(at))
    return LogitLens(
        model=lm.name,
        prompt=request.prompt,
        tokens=tuple(pieces(lm.tokenizer, ids)),
        position=position,
        answer=Candidate(1, answer_id, token_text(lm.tokenizer, answer_id), float(at[-1, answer_id])),
        rows=rows,
        grid=_grid(lm, probs) if all_positions else None,
        norm=type(norm).__name__ if norm is not None else None,
    )


def lens_probs(model: nn.Module, norm: nn.Module | None, states: torch.Tensor) -> torch.Tensor:
    """Residual states (depths, n, d_model) -> next-token probabilities (depths, n, vocab)."""
    normed = norm(states) if norm is not None else states  # (depths, n, d_model)
    logits = find_lm_head(model)(normed).float()  # (depths, n, vocab)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-2 style: the model squashes its logits after the head, so the lens must too
        logits = torch.tanh(logits / cap) * cap
    return torch.softmax(logits, dim=-1)


def _row(lm: LM, depth: int, dist: torch.Tensor, answer_id: int, top_k: int) -> LensRow:
    top = torch.topk(dist, top_k)
    answer_prob = dist[answer_id]
    return LensRow(
        layer=depth,
        top=tuple(Candidate(rank, int(i), token_text(lm.tokenizer, int(i)), float(p))
                  for rank, (p, i) in enumerate(zip(top.values, top.indices), start=1)),
        answer_prob=float(answer_prob),
        answer_rank=int((dist > answer_prob).sum()) + 1,
    )


def _grid(lm: LM, probs: torch.Tensor) -> tuple[tuple[Candidate, ...], ...]:
    best = probs.max(dim=-1)  # values and indices, each (depths, n)
    return tuple(
        tuple(Candidate(1, int(i), token_text(lm.tokenizer, int(i)), float(p)) for p, i in zip(vals, idx))
        for vals, idx in zip(best.values, best.indices)
    )
