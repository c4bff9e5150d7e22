"""Edits inside a forward pass, installed in a context manager and always removed in its `finally`.

An edit is a function from a tensor (batch, n, width) to the tensor to use instead. It can sit
on a module's output (`on_output`), on its first input (`on_input`: the residual stream entering
block 0, or the concatenated heads entering the attention's output projection), or on a block's
contribution (`on_contribution`: the block's output minus its input). Each row of a batch may
get a different edit, which is how a sweep runs many cells in one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lookinside.core import errors
from lookinside.core.inside.hooks import find_layers

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    from lookinside.core.model.loading import LM

Edit = Callable[[torch.Tensor], torch.Tensor]
Install = Callable[[], "RemovableHandle"]

ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "wo")


@dataclass(frozen=True)
class Block:
    """One decoder block and the parts an intervention reaches."""

    index: int
    module: nn.Module
    attn: nn.Module | None
    mlp: nn.Module | None
    out_proj: nn.Module | None  # the attention's output projection: its input is the heads side by side


def _child(module: nn.Module | None, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def blocks(model: nn.Module) -> list[Block]:
    """Every decoder block with its attention, MLP and attention output projection (None where not found)."""
    _, layers = find_layers(model)
    found = []
    for index, layer in enumerate(layers):
        attn = _child(layer, ATTENTION_NAMES)
        found.append(Block(index, layer, attn, _child(layer, MLP_NAMES), _child(attn, OUT_PROJ_NAMES)))
    return found


def part_of(block: Block, part: str) -> nn.Module:
    """The block's `attn` or `mlp` module, or one line saying this architecture has none we can find."""
    module = block.attn if part == "attn" else block.mlp if part == "mlp" else block.module
    if module is None:
        names = ATTENTION_NAMES if part == "attn" else MLP_NAMES
        raise errors.BadInput(f"block {block.index} ({type(block.module).__name__}) has no {part} part "
                              f"(looked for {', '.join(names)})")
    return module


def heads_of(lm: LM, block: Block) -> tuple[int, int]:
    """(heads, head_dim) of the block's attention, checked against its output projection's input width."""
    heads = getattr(lm.config, "num_attention_heads", None)
    width = getattr(block.out_proj, "in_features", None)
    if block.out_proj is None or not heads or width is None or width % heads:
        raise errors.BadInput(f"block {block.index} ({type(block.module).__name__}) has no attention output "
                              f"projection whose input splits into heads (looked for {', '.join(OUT_PROJ_NAMES)})")
    return heads, width // heads


def _edited(value: Any, edit: Edit) -> Any:
    """A module's output with its tensor (or a tuple's first item) put through `edit`, the rest as it was."""
    if isinstance(value, torch.Tensor):
        return edit(value)
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        return (edit(value[0]), *value[1:])
    raise TypeError(f"cannot edit a module output of type {type(value).__name__}")


def on_output(module: nn.Module, edit: Edit) -> Install:
    """The module's output (its first tensor, for modules that return a tuple) goes through `edit`."""
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        return _edited(output, edit)

    return lambda: module.register_forward_hook(hook)


def on_input(module: nn.Module, edit: Edit) -> Install:
    """The module's first input (positional, or `hidden_states` by name) goes through `edit`."""
    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args and isinstance(args[0], torch.Tensor):
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    return lambda: module.register_forward_pre_hook(hook, with_kwargs=True)


def on_contribution(module: nn.Module, edit: Edit) -> Install:
    """A block's output becomes its input plus `edit(output - input)`: the block's contribution is edited."""
    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        entering = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs["hidden_states"]
        return _edited(output, lambda leaving: entering + edit(leaving - entering))

    return lambda: module.register_forward_hook(hook, with_kwargs=True)


def on_stream(lm: LM, depth: int, edit: Edit) -> Install:
    """The residual stream at `depth` (0: entering block 0, i: leaving block i-1) goes through `edit`."""
    found = blocks(lm.model)
    return on_input(found[0].module, edit) if depth == 0 else on_output(found[depth - 1].module, edit)


@contextmanager
def installed(installs: Sequence[Install]) -> Iterator[None]:
    """Every hook in place for the block's duration, and none left after it, whatever happens inside."""
    handles: list[RemovableHandle] = []
    try:
        for install in installs:
            handles.append(install())
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def recording(installs: Sequence[tuple[str, nn.Module, bool]]) -> Iterator[dict[str, torch.Tensor]]:
    """Keep a copy of what each (key, module, input?) sees: the module's first input or output."""
    kept: dict[str, torch.Tensor] = {}

    def keeper(key: str) -> Edit:
        def keep(x: torch.Tensor) -> torch.Tensor:
            kept[key] = x.detach().clone()
            return x

        return keep

    with installed([on_input(m, keeper(k)) if entering else on_output(m, keeper(k)) for k, m, entering in installs]):
        yield kept


# ---- edits: what to put in place of a tensor


def ablated(x: torch.Tensor, rows: Sequence[int], mode: str) -> torch.Tensor:
    """`x` with the given rows replaced by zeros, or by their mean over positions.  # (batch, n, width)"""
    x = x.clone()
    index = torch.tensor(list(rows), device=x.device)
    x[index] = 0 if mode == "zero" else x[index].mean(dim=1, keepdim=True).expand_as(x[index])
    return x


def heads_ablated(x: torch.Tensor, cells: Sequence[tuple[int, int]], head_dim: int, mode: str) -> torch.Tensor:
    """The heads side by side (batch, n, heads * head_dim), with head h of row r ablated for each (r, h)."""
    batch, n, width = x.shape
    out = x.clone().view(batch, n, width // head_dim, head_dim)  # (batch, n, heads, head_dim)
    rows = torch.tensor([r for r, _ in cells], device=x.device)
    heads = torch.tensor([h for _, h in cells], device=x.device)
    picked = out[rows, :, heads]  # (cells, n, head_dim)
    out[rows, :, heads] = 0 if mode == "zero" else picked.mean(dim=1, keepdim=True).expand_as(picked)
    return out.view(batch, n, width)


def placed(x: torch.Tensor, rows: Sequence[int], positions: Sequence[int], values: torch.Tensor) -> torch.Tensor:
    """`x` with row r's position p set to `values[i]` for each i-th (r, p).  # values: (cells, width)"""
    x = x.clone()
    x[torch.tensor(list(rows), device=x.device), torch.tensor(list(positions), device=x.device)] = values.to(x)
    return x


def added(vector: torch.Tensor) -> Edit:
    """An edit that adds `vector` (width,) at every position of every row."""
    return lambda x: x + vector.to(x)


# ---- passes


def last_logits(lm: LM, ids: list[int], batch: int = 1) -> torch.Tensor:
    """The next-token logits at the last position, for `batch` copies of `ids` in one pass.  # (batch, vocab)"""
    input_ids = torch.tensor([ids] * batch, device=lm.device)  # (batch, n)
    with torch.inference_mode():
        out = lm.model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
    logits = out.logits[:, -1, :].float()  # (batch, vocab)
    no_number = ~torch.isfinite(logits).any(dim=-1)  # (batch,): a row of only infinities gives no distribution
    if bool(torch.isnan(logits).any()) or bool(no_number.any()):
        raise errors.LookinsideError(f"the model's logits are not numbers (NaN or all infinite) in {lm.dtype}"
                                     " with this intervention; try --dtype float32")
    return logits
