"""Architecture facts as plain data: the module tree and the architecture card.

The model is built on the meta device from its config alone, so no weight is read
or allocated: Phi-3-mini's card needs only config.json (the project carries it).
Facts come from the config and from the modules transformers builds for it, never
from hard-coded Phi-3 names, so Llama, Qwen or GPT-2 read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lookinside.core import errors
from lookinside.core.model.loaded import context_length
from lookinside.core.model.loading import load_config_offline
from lookinside.core.model.quantize import estimate
from lookinside.core.records import Anatomy, Architecture, ModuleNode, attention_kind  # noqa: F401  (the records live there)
from lookinside.core.request import InspectRequest

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

    from lookinside.core.model.spec import LoadSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SILENT = (nn.Dropout, nn.Identity)  # no weights and no effect at inference: left out of the tree


@dataclass(frozen=True)
class OnMeta:
    """A model built on the meta device from its config alone: what `llm inspect` reads, with no weights."""

    name: str
    model: nn.Module


def on_meta(spec: LoadSpec) -> OnMeta:
    """`spec.model` built from its config (carried offline for the default model)."""
    config = load_config_offline(spec.model, trust_remote_code=spec.trust_remote_code)
    return OnMeta(spec.model, meta_model(config, spec.trust_remote_code))


def inspect_model(spec: LoadSpec) -> Anatomy:
    """The anatomy of `spec.model` from its config alone, with --quantize's footprint when asked."""
    return anatomy_for(on_meta(spec), InspectRequest(spec.quantize))


def anatomy_for(lm: Any, request: InspectRequest) -> Anatomy:
    """`llm inspect` on a model (or on one built on the meta device), with --quantize's footprint when asked."""
    anatomy = anatomy_of(lm.name, lm.model)
    return replace(anatomy, quantized=estimate(lm.model, request.quantize)) if request.quantize else anatomy


def anatomy_from_config(name: str, config: PretrainedConfig, trust_remote_code: bool = False) -> Anatomy:
    """Build the model on the meta device (shapes, no storage) and read its anatomy."""
    return anatomy_of(name, meta_model(config, trust_remote_code))


def meta_model(config: PretrainedConfig, trust_remote_code: bool = False) -> PreTrainedModel:
    """The model's modules with meta tensors: every shape is real, no memory is used."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # some remote-code models compute at init; accelerate patches only parameter creation
        pass
    try:
        with init_empty_weights():
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise errors.LookinsideError(f"cannot build {type(config).__name__} without weights: {first}") from exc


def anatomy_of(name: str, model: nn.Module) -> Anatomy:
    """The card and tree of a built model (meta or real)."""
    return Anatomy(card=architecture_card(name, model), tree=module_tree(model))


def count_parameters(module: nn.Module) -> int:
    """Parameters in `module`, a tied weight counted once."""
    return sum(p.numel() for p in module.parameters())


def module_tree(model: nn.Module) -> ModuleNode:
    """The module tree with runs of identical siblings (the decoder layers) collapsed."""
    tied = _tied_names(model)
    return _node("", model, tied, "")


def _node(name: str, module: nn.Module, tied: dict[str, str], path: str) -> ModuleNode:
    children = [
        _node(child_name, child, tied, f"{path}.{child_name}" if path else child_name)
        for child_name, child in module.named_children()
        if not isinstance(child, SILENT)
    ]
    return ModuleNode(
        name=name,
        kind=type(module).__name__,
        detail=module.extra_repr(),
        parameters=count_parameters(module),
        children=tuple(_collapse(children)),
        tied_to=tied.get(path),
    )


def _collapse(children: list[ModuleNode]) -> list[ModuleNode]:
    """Merge consecutive siblings that differ only by their index name ("0", "1", ...) into one."""
    merged: list[ModuleNode] = []
    for child in children:
        last = merged[-1] if merged else None
        if last is not None and child.name.isdigit() and _same(last, child):
            first = last.name.split("-")[0]
            merged[-1] = replace(last, name=f"{first}-{child.name}", repeat=last.repeat + 1)
        else:
            merged.append(child)
    return merged


def _same(a: ModuleNode, b: ModuleNode) -> bool:
    return _shape(a) == _shape(b)


def _shape(node: ModuleNode) -> tuple[Any, ...]:
    return (node.kind, node.detail, node.parameters, tuple((c.name, c.repeat, _shape(c)) for c in node.children))


def _tied_names(model: nn.Module) -> dict[str, str]:
    """Module paths whose weight is the same tensor as an earlier module's: {later: earlier}."""
    seen: dict[int, str] = {}
    tied: dict[str, str] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        weight = module._parameters.get("weight")
        if weight is None:
            continue
        owner = seen.setdefault(id(weight), path)
        if owner != path:
            tied[path] = owner
    return tied


def architecture_card(name: str, model: nn.Module) -> Architecture:
    """The architecture card, from the model's config and the modules built for it."""
    config = model.config
    heads = _first_int(config, "num_attention_heads", "n_head") or 1
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model") or 0
    kv_heads = _kv_heads(config, heads)
    head_dim = _first_int(config, "head_dim") or hidden // heads
    layers = _first_int(config, "num_hidden_layers", "n_layer") or 0
    parameters = count_parameters(model)
    ffn, activation = _ffn(model, config)
    norm, eps = _norm(model, config)
    positions, rope = _positions(model, config)
    return Architecture(
        model=name,
        architecture=type(model).__name__,
        model_type=str(getattr(config, "model_type", "")),
        vocab_size=_first_int(config, "vocab_size") or 0,
        hidden_size=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        attention=attention_kind(heads, kv_heads),
        group_size=heads // kv_heads,
        intermediate_size=_first_int(config, "intermediate_size", "n_inner", "ffn_dim"),
        ffn=ffn,
        activation=activation,
        norm=norm,
        norm_eps=eps,
        positions=positions,
        rope=rope,
        sliding_window=_first_int(config, "sliding_window"),
        context_length=context_length(config),
        tied_embeddings=_tied(model),
        parameters=parameters,
        weight_bytes={dtype: parameters * size for dtype, size in DTYPE_BYTES.items()},
        kv_bytes_per_token={dtype: 2 * layers * kv_heads * head_dim * size for dtype, size in DTYPE_BYTES.items()},
    )


def _first_int(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _kv_heads(config: Any, heads: int) -> int:
    if getattr(config, "multi_query", False):  # GPT-BigCode, Falcon's older configs
        return 1
    kv = _first_int(config, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    return kv if kv else heads


GATED_NAMES = {"silu": "SwiGLU", "swish": "SwiGLU"}  # gelu* -> GeGLU
GATE_NAMES = ("gate_proj", "w1", "wi_0")  # Llama/Mistral/Qwen, Mixtral experts, T5-style


def _activation(config: Any) -> str | None:
    for name in ("hidden_activation", "hidden_act", "activation_function"):  # Gemma names its real one first
        value = getattr(config, name, None)
        if isinstance(value, str):
            return value
    return None


def _ffn(model: nn.Module, config: Any) -> tuple[str, str | None]:
    """SwiGLU/GeGLU when the MLP has a gate projection (fused with up when gate_up_proj exists)."""
    activation = _activation(config)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    gated = GATED_NAMES.get(activation or "") or ("GeGLU" if (activation or "").startswith("gelu") else None)
    gated = gated or f"gated {activation or 'MLP'}"
    if "gate_up_proj" in names:
        return f"{gated} (fused gate/up)", activation
    if any(name in names for name in GATE_NAMES):
        return gated, activation
    return (f"MLP ({activation})" if activation else "MLP"), activation


def _norm(model: nn.Module, config: Any) -> tuple[str, float | None]:
    """The normalisation family (RMSNorm or LayerNorm, from the module classes) and its epsilon."""
    kinds = {type(m).__name__ for m in model.modules()}
    norm = next((family for family in ("RMSNorm", "LayerNorm") if any(family in k for k in kinds)), "none found")
    eps = next((getattr(config, n) for n in ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon")
                if isinstance(getattr(config, n, None), (int, float))), None)
    return norm, None if eps is None else float(eps)


def _positions(model: nn.Module, config: Any) -> tuple[str, dict[str, Any]]:
    """RoPE with its theta and scaling (transformers 5's rope_parameters), or learned positions."""
    params = getattr(config, "rope_parameters", None) or {}
    if not params and getattr(config, "rope_theta", None) is not None:  # older configs
        params = {"rope_theta": config.rope_theta, **(getattr(config, "rope_scaling", None) or {})}
    if params or any("Rotary" in type(m).__name__ for m in model.modules()):
        rope = {k: v for k, v in dict(params).items() if isinstance(v, (int, float, str)) or v is None}
        return "RoPE", rope
    if any(name.endswith(("wpe", "embed_positions", "position_embeddings")) for name, _ in model.named_modules()):
        return "learned absolute", {}
    return "none found", {}


def _tied(model: nn.Module) -> bool:
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(inp, "weight", None)  # a packed table (a GGUF kept quantized) has none: never tied
    return weight is not None and weight is getattr(out, "weight", None)
