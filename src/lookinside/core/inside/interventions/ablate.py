"""Ablation: remove a part of the model and watch the next-token table change.

A head is ablated in its slice of the attention output, before the output projection (the
projection's input is the heads side by side, however many key/value heads there are and
whether q, k, v are one fused matrix); a layer's part (attn, mlp, or the whole block) in its
contribution to the residual stream. `zero` puts zeros there; `mean` the slice's mean over the
prompt's positions. A sweep ablates every head (or every layer's every part) alone and reads the
original top token's probability; one forward pass per layer runs all of that layer's cells as rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lookinside.core.decoding.prompting import check_top_k
from lookinside.core.decoding.tokens import pieces
from lookinside.core.inside import passes
from lookinside.core.inside.hooks import head_rows
from lookinside.core.inside.interventions import hooks
from lookinside.core.inside.interventions.records import AblationResult, Grid
from lookinside.core.inside.interventions.requests import PARTS, resolve
from lookinside.core.inside.interventions.shift import candidates, shift

if TYPE_CHECKING:
    from lookinside.core.inside.interventions.requests import AblateRequest
    from lookinside.core.model.loading import LM


def ablate(lm: LM, request: AblateRequest, batched: bool = True) -> AblationResult:
    """The next-token table with the asked part removed, beside the table without; or a whole sweep."""
    check_top_k(request.top_k, head_rows(lm.model))
    ids = passes.prompt_ids(lm, request.prompt, request.chat)
    found = hooks.blocks(lm.model)
    before = hooks.last_logits(lm, ids)[0]  # (vocab,)
    top = candidates(lm, before, request.top_k)
    ablated: tuple[str, ...] = ()
    result_shift, grid = None, None
    if request.sweep == "heads":
        grid = head_sweep(lm, ids, found, request.mode, int(before.argmax()), batched)
    elif request.sweep == "layers":
        grid = layer_sweep(lm, ids, found, request.mode, int(before.argmax()), batched)
    else:
        installs, ablated = _single(lm, request, found)
        with hooks.installed(installs):
            after = hooks.last_logits(lm, ids)[0]
        result_shift = shift(lm, before, after, request.top_k)
    return AblationResult(model=lm.name, prompt=request.prompt, tokens=tuple(pieces(lm.tokenizer, ids)),
                          mode=request.mode, ablated=ablated, shift=result_shift, sweep=request.sweep, top=top[0],
                          grid=grid)


def _single(lm: LM, request: AblateRequest, found: list[hooks.Block]) -> tuple[list[hooks.Install], tuple[str, ...]]:
    """The hooks for --head L.H ... or --layer L --part P, and their names."""
    if request.layer is not None:
        layer = resolve("--layer", request.layer, len(found), f"a model of {len(found)} blocks")
        return [part_install(found[layer], request.part, [0], request.mode)], (f"layer {layer} {request.part}",)
    by_layer: dict[int, list[int]] = {}
    for layer, head in request.heads:
        layer = resolve("--head's layer", layer, len(found), f"a model of {len(found)} blocks")
        heads, _ = hooks.heads_of(lm, found[layer])
        by_layer.setdefault(layer, []).append(resolve("--head's head", head, heads, f"{heads} heads"))
    installs = [head_install(lm, found[layer], [(0, h) for h in sorted(set(hs))], request.mode)
                for layer, hs in sorted(by_layer.items())]
    names = tuple(f"head {layer}.{h}" for layer, hs in sorted(by_layer.items()) for h in sorted(set(hs)))
    return installs, names


def head_install(lm: LM, block: hooks.Block, cells: list[tuple[int, int]], mode: str) -> hooks.Install:
    """A hook on the block's output projection ablating head h in row r for each (r, h)."""
    _, head_dim = hooks.heads_of(lm, block)
    assert block.out_proj is not None  # heads_of refused a block without one
    return hooks.on_input(block.out_proj, lambda x: hooks.heads_ablated(x, cells, head_dim, mode))


def part_install(block: hooks.Block, part: str, rows: list[int], mode: str) -> hooks.Install:
    """A hook ablating the block's part (attn, mlp: its output; block: its contribution) in the given rows."""
    def edit(x: torch.Tensor) -> torch.Tensor:
        return hooks.ablated(x, rows, mode)

    if part == "block":
        return hooks.on_contribution(block.module, edit)
    return hooks.on_output(hooks.part_of(block, part), edit)


def head_sweep(lm: LM, ids: list[int], found: list[hooks.Block], mode: str, top: int, batched: bool = True) -> Grid:
    """The top token's probability with each head ablated alone: one pass per layer, one row per head."""
    heads, _ = hooks.heads_of(lm, found[0])
    values = []
    for block in found:
        if batched:
            with hooks.installed([head_install(lm, block, [(h, h) for h in range(heads)], mode)]):
                values.append(_probs(lm, ids, heads, top))
        else:
            values.append(tuple(_one(lm, ids, [head_install(lm, block, [(0, h)], mode)], top) for h in range(heads)))
    return Grid(rows=tuple(f"layer {b.index}" for b in found), columns=tuple(f"head {h}" for h in range(heads)),
                values=tuple(values))


def layer_sweep(lm: LM, ids: list[int], found: list[hooks.Block], mode: str, top: int, batched: bool = True) -> Grid:
    """The top token's probability with each layer's attn, mlp and whole block ablated alone: one pass per layer."""
    values = []
    for block in found:
        if batched:
            with hooks.installed([part_install(block, part, [row], mode) for row, part in enumerate(PARTS)]):
                values.append(_probs(lm, ids, len(PARTS), top))
        else:
            values.append(tuple(_one(lm, ids, [part_install(block, part, [0], mode)], top) for part in PARTS))
    return Grid(rows=tuple(f"layer {b.index}" for b in found), columns=PARTS, values=tuple(values))


def _probs(lm: LM, ids: list[int], rows: int, token: int) -> tuple[float, ...]:
    return tuple(torch.softmax(hooks.last_logits(lm, ids, batch=rows), -1)[:, token].tolist())


def _one(lm: LM, ids: list[int], installs: list[hooks.Install], token: int) -> float:
    with hooks.installed(installs):
        return _probs(lm, ids, 1, token)[0]
