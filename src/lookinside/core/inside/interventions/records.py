"""What the intervention views draw, as plain data: nothing here imports torch.

Numbers are plain floats; one that is not finite never reaches a record as a number: it is
None, and the record says why (`kl_note`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lookinside.core.records import Candidate, Piece


@dataclass(frozen=True)
class Shift:
    """A next-token distribution before and after an intervention, and how far it moved."""

    before: tuple[Candidate, ...]
    after: tuple[Candidate, ...]
    kl: float | None  # KL(before || after) in nats; None when it is not a finite number
    kl_note: str | None  # why `kl` is None
    top_after_prob: float  # the original top token's probability after
    top_after_rank: int  # and its rank after (1 = still on top)

    DERIVED = ("change",)  # written into the JSON beside the fields (core/wire.py)

    @property
    def top(self) -> Candidate:
        """The original top token (before the intervention)."""
        return self.before[0]

    @property
    def change(self) -> float:
        """How much the original top token's probability moved (after - before)."""
        return self.top_after_prob - self.top.prob


@dataclass(frozen=True)
class Grid:
    """A sweep's picture: one value per (row, column), e.g. layers x heads or layers x positions."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]  # [row][column]


@dataclass(frozen=True)
class AblationResult:
    """`ablate`: what was removed, and the next-token table before and after (or a whole sweep)."""

    model: str
    prompt: str
    tokens: tuple[Piece, ...]
    mode: str  # zero | mean
    ablated: tuple[str, ...]  # what was ablated, e.g. ("head 2.1",) or ("layer 3 mlp",); empty for a sweep
    shift: Shift | None  # the single ablation's effect; None for a sweep
    sweep: str | None  # heads | layers
    top: Candidate  # the unablated top token, the one a sweep watches
    grid: Grid | None  # a sweep: the top token's probability with each cell ablated alone


@dataclass(frozen=True)
class PatchResult:
    """`patch`: the target's probability on the corrupted prompt with each (layer, position) taken from the clean run."""

    model: str
    clean: str
    corrupt: str
    clean_tokens: tuple[Piece, ...]
    tokens: tuple[Piece, ...]  # of the corrupted prompt (the positions)
    target: Candidate  # the watched token, with its clean probability
    clean_prob: float
    corrupt_prob: float
    part: str  # resid | attn | mlp
    prob: tuple[tuple[float, ...], ...]  # [layer][position]; for resid layer 0 = embeddings, i = after block i-1

    DERIVED = ("layer_names",)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """What each row of `prob` is."""
        if self.part == "resid":
            return ("embeddings", *(f"block {i}" for i in range(len(self.prob) - 1)))
        return tuple(f"block {i} {self.part}" for i in range(len(self.prob)))


@dataclass(frozen=True)
class SteerResult:
    """`steer`: the same seed's continuation without and with the steering vector, and the next-token shift."""

    model: str
    prompt: str
    add: str
    subtract: str | None
    layer: int  # depth: 0 = the embeddings' output, i = after block i-1
    alpha: float
    norm: float  # the steering vector's length (before alpha)
    seed: int | None  # None when greedy
    unsteered: str
    steered: str
    shift: Shift


@dataclass(frozen=True)
class SteerSpec:
    """A steer as plain data (what chat's /steer holds and sends to a server): add alpha x (stream of `add` minus
    stream of `subtract`) at `depth` (0: entering block 0; i: leaving block i-1, already resolved by the model)."""

    add: str
    subtract: str | None
    depth: int
    alpha: float

    def describe(self) -> str:
        """One line for a stats line or a /steer reply."""
        minus = f" - {self.subtract!r}" if self.subtract is not None else ""
        return f"steer {self.alpha:g} x ({self.add!r}{minus}) at layer {self.depth}"

    def label(self) -> str:
        """A few words for the chat's stats line."""
        return f"steer on (layer {self.depth}, alpha {self.alpha:g})"
