"""Find a model's parts by structure, and read one forward pass stage by stage with hooks.

Nothing here knows Phi-3's module names: the decoder blocks are the ModuleList with
one entry per layer, the LM head is `get_output_embeddings()`, and the final norm is
the base model's `norm` (or `final_layernorm`, `ln_f`, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lookinside.core import errors
from lookinside.core.decoding.tokens import pieces
from lookinside.core.inside import passes
from lookinside.core.inside.anatomy import SILENT, architecture_card
from lookinside.core.records import ForwardPass, LayerRun, Piece, Stage  # noqa: F401  (the records live there)

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.core.request import ForwardRequest

FINAL_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f", "final_norm")


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the ModuleList with one entry per layer (the longest as a fallback)."""
    wanted = getattr(model.config, "num_hidden_layers", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise errors.NotACausalLM(f"{type(model).__name__} has no stack of decoder blocks to look into")
    exact = [(name, m) for name, m in lists if len(m) == wanted]
    return max(exact or lists, key=lambda item: len(item[1]))


def find_final_norm(model: nn.Module) -> nn.Module | None:
    """The norm after the last block, found on the base model by its usual names."""
    bases = [getattr(model, "base_model", None), getattr(model, "model", None), model]
    for base in (b for b in bases if isinstance(b, nn.Module)):
        for name in FINAL_NORM_NAMES:
            norm = getattr(base, name, None)
            if isinstance(norm, nn.Module):
                return norm
    return None


def find_lm_head(model: nn.Module) -> nn.Module:
    """The LM head (the output embeddings)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise errors.NotACausalLM(f"{type(model).__name__} has no LM head (output embeddings)")
    return head


def head_rows(model: nn.Module) -> int:
    """How many tokens the LM head scores: its output rows, also where its weight is packed (the CPU's int8)."""
    head = find_lm_head(model)
    rows = getattr(head, "out_features", None)
    return rows if isinstance(rows, int) else head.weight.shape[0]


def head_device(model: nn.Module) -> torch.device:
    """Where the LM head computes: its weight's device, else its first buffer's (our int4 and int8 layers keep
    their weights as buffers), else the CPU (a dynamic int8 head, which only runs there)."""
    head = find_lm_head(model)
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    buffer = next(head.buffers(recurse=False), None)
    return buffer.device if buffer is not None else torch.device("cpu")


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in a module's output or arguments (a tensor, a tuple, a dict)."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def forward_of(lm: LM, request: ForwardRequest) -> ForwardPass:
    """`llm forward`: the shapes through one forward pass of the request's prompt."""
    return trace_forward(lm, request.prompt, chat=request.chat)


def trace_forward(lm: LM, prompt: str, chat: bool = False) -> ForwardPass:
    """Run the prompt once with a hook on every module and keep each call's shapes."""
    ids = passes.prompt_ids(lm, prompt, chat)
    with record_shapes(lm.model) as calls:
        passes.forward(lm, ids)
    layers_path, _ = find_layers(lm.model)
    before, in_stack, after = _split(calls, layers_path)
    card = architecture_card(lm.name, lm.model)
    return ForwardPass(
        model=lm.name,
        prompt=prompt,
        tokens=tuple(pieces(lm.tokenizer, ids)),
        input_shape=(1, len(ids)),
        before=tuple(before),
        blocks=tuple(collapse_layers(in_stack)),
        after=tuple(after),
        heads=card.heads,
        kv_heads=card.kv_heads,
        head_dim=card.head_dim,
    )


@contextmanager
def record_shapes(model: nn.Module) -> Iterator[list[Stage]]:
    """Hooks on every module that computes something; yields the calls in the order they start."""
    calls: list[Stage] = []
    handles = []
    for path, module in model.named_modules():
        if not path or isinstance(module, (nn.ModuleList, nn.ModuleDict, *SILENT)):
            continue
        handles.append(module.register_forward_pre_hook(_on_start(calls, path, module), with_kwargs=True))
        handles.append(module.register_forward_hook(_on_end(calls, path), with_kwargs=True))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _on_start(calls: list[Stage], path: str, module: nn.Module) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tensor = first_tensor(args)
        tensor = tensor if tensor is not None else first_tensor(kwargs)  # hidden_states passed by name
        calls.append(Stage(path=path, kind=type(module).__name__, input_shape=_shape(tensor), output_shape=None))

    return hook


def _on_end(calls: list[Stage], path: str) -> Any:
    def hook(_module: nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], output: Any) -> None:
        # the latest unfinished call of this module is the one ending now
        for i in range(len(calls) - 1, -1, -1):
            if calls[i].path == path and calls[i].output_shape is None:
                calls[i] = replace(calls[i], output_shape=_shape(first_tensor(output)))
                return

    return hook


def _shape(tensor: torch.Tensor | None) -> tuple[int, ...] | None:
    return None if tensor is None else tuple(tensor.shape)


def _split(calls: list[Stage], layers_path: str) -> tuple[list[Stage], list[Stage], list[Stage]]:
    """Calls before the stack, inside it (renamed relative to their block), and after it."""
    before: list[Stage] = []
    in_stack: list[Stage] = []
    after: list[Stage] = []
    prefix = f"{layers_path}."
    for call in calls:
        if layers_path.startswith(f"{call.path}."):
            continue  # a wrapper around the whole stack (the base model): its shapes say nothing new
        if call.path.startswith(prefix):
            index, _, rest = call.path[len(prefix):].partition(".")
            in_stack.append(replace(call, path=rest, layer=int(index)))
        else:
            (after if in_stack else before).append(call)
    return before, in_stack, after


def collapse_layers(stages: list[Stage]) -> list[LayerRun]:
    """Group per-block stages, then merge consecutive blocks whose stages are identical."""
    by_layer: dict[int, list[Stage]] = {}
    for stage in stages:
        by_layer.setdefault(stage.layer or 0, []).append(stage)
    runs: list[LayerRun] = []
    for layer in sorted(by_layer):
        own = tuple(by_layer[layer])
        if runs and runs[-1].last == layer - 1 and _signature(runs[-1].stages) == _signature(own):
            runs[-1] = LayerRun(first=runs[-1].first, last=layer, stages=runs[-1].stages)
        else:
            runs.append(LayerRun(first=layer, last=layer, stages=own))
    return runs


def _signature(stages: tuple[Stage, ...]) -> tuple[Any, ...]:
    return tuple((s.path, s.kind, s.input_shape, s.output_shape) for s in stages)


@contextmanager
def residual_stream(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Hooks that keep the residual stream: block 0's input, then every block's output, (batch, n, d_model) each."""
    _, layers = find_layers(model)
    stream: list[torch.Tensor] = []

    def keep_input(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tensor = first_tensor(args)
        stream.append(tensor if tensor is not None else kwargs["hidden_states"])

    def keep_output(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        stream.append(first_tensor(output))

    handles = [layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(keep_output) for layer in layers]
    try:
        yield stream
    finally:
        for handle in handles:
            handle.remove()
