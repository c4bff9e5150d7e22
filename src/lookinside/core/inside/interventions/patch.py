"""Activation patching ("causal tracing"): run the corrupted prompt with one clean activation put back.

For every layer and position, the corrupted run gets the clean run's residual stream (or, with
part attn|mlp, one sublayer's output) at that (layer, position), and the target token's
probability at the last position is read. All positions of one layer run as one batch: row p
patches position p. Layer 0 of the residual stream is the embeddings' output (block 0's input),
layer i the output of block i-1, as in `hidden_states[i]` and `llm lens`; so the last layer at the
last position hands the final norm the clean stream and gives back the clean probability.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lookinside.core import errors
from lookinside.core.decoding.detokenize import token_text
from lookinside.core.decoding.tokens import pieces
from lookinside.core.inside import passes
from lookinside.core.inside.interventions import hooks
from lookinside.core.inside.interventions.records import PatchResult
from lookinside.core.records import Candidate

if TYPE_CHECKING:
    from lookinside.core.inside.interventions.requests import PatchRequest
    from lookinside.core.model.loading import LM

TOKENS_PER_PASS = 8192  # rows x positions in one batched pass; a longer prompt splits a layer's rows


def patch(lm: LM, request: PatchRequest, batched: bool = True) -> PatchResult:
    """The target's probability for every (layer, position) patched from clean into corrupt."""
    clean_ids = passes.prompt_ids(lm, request.clean, request.chat)
    ids = passes.prompt_ids(lm, request.corrupt, request.chat)
    check_same_length(lm, clean_ids, ids)
    sites = patch_sites(lm, request.part)
    with hooks.recording([(str(i), module, entering) for i, (module, entering) in enumerate(sites)]) as kept:
        clean_logits = hooks.last_logits(lm, clean_ids)[0]  # (vocab,)
    target = target_id(lm, request.target, clean_logits)
    clean_prob = float(torch.softmax(clean_logits, -1)[target])
    corrupt_prob = float(torch.softmax(hooks.last_logits(lm, ids)[0], -1)[target])
    run = _layer_batched if batched else _layer_per_cell
    prob = tuple(run(lm, ids, module, entering, kept[str(i)][0], target) for i, (module, entering) in enumerate(sites))
    return PatchResult(
        model=lm.name,
        clean=request.clean,
        corrupt=request.corrupt,
        clean_tokens=tuple(pieces(lm.tokenizer, clean_ids)),
        tokens=tuple(pieces(lm.tokenizer, ids)),
        target=Candidate(1, target, token_text(lm.tokenizer, target), clean_prob),
        clean_prob=clean_prob,
        corrupt_prob=corrupt_prob,
        part=request.part,
        prob=prob,
    )


def check_same_length(lm: LM, clean: list[int], corrupt: list[int]) -> None:
    """Refuse prompts of different token lengths, showing both tokenizations."""
    if len(clean) != len(corrupt):
        def shown(ids: list[int]) -> str:
            return "|".join(token_text(lm.tokenizer, i) for i in ids)

        raise errors.BadInput(f"--clean and --corrupt must be the same number of tokens to patch position by "
                              f"position: clean is {len(clean)} ({shown(clean)}), corrupt {len(corrupt)} "
                              f"({shown(corrupt)})")


def patch_sites(lm: LM, part: str) -> list[tuple[torch.nn.Module, bool]]:
    """Where each layer's patch goes: (module, True for its input / False for its output)."""
    found = hooks.blocks(lm.model)
    if part == "resid":
        return [(found[0].module, True)] + [(block.module, False) for block in found]
    return [(hooks.part_of(block, part), False) for block in found]


def target_id(lm: LM, target: str | None, clean_logits: torch.Tensor) -> int:
    """The watched token: the one token `target` encodes to, else the clean run's top token."""
    if target is None:
        return int(clean_logits.argmax())
    ids = lm.tokenizer(target, add_special_tokens=False).input_ids
    if len(ids) != 1:
        pieces_ = "|".join(token_text(lm.tokenizer, i) for i in ids)
        raise errors.BadInput(f"--target must be one token, but {target!r} is {len(ids)} ({pieces_})")
    return int(ids[0])


def _layer_batched(lm: LM, ids: list[int], module: torch.nn.Module, entering: bool, clean: torch.Tensor,
                   target: int) -> tuple[float, ...]:
    """One layer: row p of a batch patches position p; rows split so a pass holds TOKENS_PER_PASS tokens."""
    n = len(ids)
    probs: list[float] = []
    step = max(1, TOKENS_PER_PASS // n)
    for first in range(0, n, step):
        positions = list(range(first, min(n, first + step)))
        rows = list(range(len(positions)))

        def edit(x: torch.Tensor, rows: list[int] = rows, positions: list[int] = positions) -> torch.Tensor:
            return hooks.placed(x, rows, positions, clean[positions])

        install = hooks.on_input(module, edit) if entering else hooks.on_output(module, edit)
        with hooks.installed([install]):
            logits = hooks.last_logits(lm, ids, batch=len(rows))  # (rows, vocab)
        probs += torch.softmax(logits, -1)[:, target].tolist()
    return tuple(probs)


def _layer_per_cell(lm: LM, ids: list[int], module: torch.nn.Module, entering: bool, clean: torch.Tensor,
                    target: int) -> tuple[float, ...]:
    """One layer, one forward pass per position: the loop the batched sweep replaces (kept to measure it)."""
    probs = []
    for position in range(len(ids)):
        def edit(x: torch.Tensor, position: int = position) -> torch.Tensor:
            return hooks.placed(x, [0], [position], clean[[position]])

        install = hooks.on_input(module, edit) if entering else hooks.on_output(module, edit)
        with hooks.installed([install]):
            probs.append(float(torch.softmax(hooks.last_logits(lm, ids)[0], -1)[target]))
    return tuple(probs)
