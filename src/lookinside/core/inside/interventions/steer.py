"""Steering (activation addition): add alpha x a direction to the residual stream at one depth.

The direction is the residual stream of `add` minus that of `subtract` (or `add` alone), each
read at the chosen depth at its last position. It is added at every position while generating
(the prompt's and each new token's), through the one token loop (`core.decoding.generate`), so the steered
and unsteered runs share the seed and differ only by the steer.

Defaults, chosen by measurement (scripts/steer_defaults.py, docs/interventions.md): the middle
depth of the model, and an alpha that makes the added vector `STEER_SIZE` times as long as the
prompt's own residual stream there. A fixed alpha means a different push in every model (the
stream of " Japan" alone is 2 to 13 times the prompt's on tiny, which 4 x wrecks); a size
relative to the stream carries over from tiny to the Phi-3 shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lookinside.core.decoding.generate import collect, with_seed
from lookinside.core.decoding.prompting import check_top_k
from lookinside.core.inside import passes
from lookinside.core.inside.hooks import head_rows
from lookinside.core.inside.interventions import hooks
from lookinside.core.inside.interventions.records import SteerResult, SteerSpec
from lookinside.core.inside.interventions.requests import resolve
from lookinside.core.inside.interventions.shift import shift
from lookinside.core.records import Step, Stream
from lookinside.core.request import GenerationSettings

if TYPE_CHECKING:
    from lookinside.core.inside.interventions.requests import SteerRequest
    from lookinside.core.model.loading import LM


@dataclass(frozen=True)
class Steering:
    """A steering vector ready to add: where, how strongly, and what it was made from."""

    vector: torch.Tensor  # (d_model,)
    depth: int  # 0: entering block 0; i: leaving block i-1
    alpha: float
    add: str
    subtract: str | None

    @property
    def spec(self) -> SteerSpec:
        """The steer as plain data (no tensor): what a chat holds and a server is sent."""
        return SteerSpec(self.add, self.subtract, self.depth, self.alpha)

    def describe(self) -> str:
        """One line for a stats line or a /steer reply."""
        return self.spec.describe()


STEER_SIZE = 0.75  # |alpha x v| / |the prompt's stream| when --alpha is not given (scripts/steer_defaults.py)


def default_depth(lm: LM) -> int:
    """The depth a steer goes to when --layer is not given: the stream after the middle block."""
    return max(1, len(hooks.blocks(lm.model)) // 2)


def depth_of(lm: LM, layer: int | None) -> int:
    """A --layer value as a depth 0..blocks (negative counts from the end; None: the middle), or one line saying
    the range."""
    if layer is None:
        return default_depth(lm)
    count = len(hooks.blocks(lm.model)) + 1
    return resolve("--layer", layer, count, f"a model of {count - 1} blocks (0: the embeddings' output)")


def sized_alpha(lm: LM, vector: torch.Tensor, prompt_ids: list[int], depth: int, size: float | None = None) -> float:
    """The alpha that makes alpha x `vector` `size` (default `STEER_SIZE`) times as long as the prompt's stream at
    `depth` (0 for a vector of length 0: --add and --subtract read the same there)."""
    size = STEER_SIZE if size is None else size
    length = float(vector.float().norm())
    return size * float(ids_stream(lm, prompt_ids, depth).float().norm()) / length if length > 0 else 0.0


def stream_at(lm: LM, text: str, depth: int, chat: bool = False) -> torch.Tensor:
    """The residual stream of `text` at `depth`, at its last position.  # (d_model,)"""
    return ids_stream(lm, passes.prompt_ids(lm, text, chat), depth)


def ids_stream(lm: LM, ids: list[int], depth: int) -> torch.Tensor:
    """The residual stream of the ids at `depth`, at the last position.  # (d_model,)"""
    found = hooks.blocks(lm.model)
    module, entering = (found[0].module, True) if depth == 0 else (found[depth - 1].module, False)
    with hooks.recording([("stream", module, entering)]) as kept:
        hooks.last_logits(lm, ids)
    return kept["stream"][0, -1]


def steering(lm: LM, add: str, subtract: str | None, layer: int | None, alpha: float | None, chat: bool = False,
             prompt_ids: list[int] | None = None) -> Steering:
    """The steering vector: stream(add) - stream(subtract) at depth `layer`, last positions; an alpha of None is
    sized to the stream of `prompt_ids` there (`sized_alpha`)."""
    depth = depth_of(lm, layer)
    vector = stream_at(lm, add, depth, chat)
    if subtract is not None:
        vector = vector - stream_at(lm, subtract, depth, chat)
    if alpha is None:
        if prompt_ids is None:
            raise ValueError("an alpha sized to the stream needs the prompt's ids")
        alpha = sized_alpha(lm, vector, prompt_ids, depth)
    return Steering(vector=vector, depth=depth, alpha=float(alpha), add=add, subtract=subtract)


def steering_hooks(lm: LM, steer: Steering) -> list[hooks.Install]:
    """The hook that adds alpha x vector at every position of the steer's depth."""
    return [hooks.on_stream(lm, steer.depth, hooks.added(steer.alpha * steer.vector))]


def steered(lm: LM, stream: Stream, steer: Steering) -> Stream:
    """`stream` with the steer on while each step computes (and off between steps, where the caller runs)."""
    def steps() -> Iterator[Step]:
        while True:
            with hooks.installed(steering_hooks(lm, steer)):
                step = next(stream, None)
            if step is None:
                return
            yield step

    return Stream(steps(), stream.params)


def steer(lm: LM, request: SteerRequest) -> SteerResult:
    """The same seed's continuation without and with the steer, and how the next-token table moved."""
    check_top_k(request.rows, head_rows(lm.model), "--rows")
    ids = passes.prompt_ids(lm, request.prompt, request.chat)  # a prompt over the context is refused before any run
    settings = GenerationSettings(max_new_tokens=request.max_new_tokens)
    vector = steering(lm, request.add, request.subtract, request.layer, request.alpha, request.chat, ids)
    params = with_seed(request.params)
    before = hooks.last_logits(lm, ids)[0]  # (vocab,)
    with hooks.installed(steering_hooks(lm, vector)):
        after = hooks.last_logits(lm, ids)[0]
    plain = collect(lm, ids, params, settings)
    with hooks.installed(steering_hooks(lm, vector)):
        moved = collect(lm, ids, params, settings)
    return SteerResult(
        model=lm.name, prompt=request.prompt, add=request.add, subtract=request.subtract, layer=vector.depth,
        alpha=vector.alpha, norm=float(vector.vector.float().norm()), seed=None if params.greedy else params.seed,
        unsteered=plain.text, steered=moved.text, shift=shift(lm, before, after, request.rows),
    )
