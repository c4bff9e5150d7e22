"""A from-scratch forward pass of Phi-3 and Llama blocks in plain torch, with interventions written into it.

Nothing here uses the project's hooks or transformers' modules: only the weights (state_dict) and the
config. It computes in float64, so a difference from the real model is the model's float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Edits:
    """What to change on the way: each field is off when empty."""

    heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> heads ablated
    parts: dict[int, str] = field(default_factory=dict)  # layer -> attn | mlp | block ablated
    mode: str = "zero"
    stream_patch: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)  # (depth, position) -> (d,)
    attn_patch: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)  # (layer, position) -> (d,)
    mlp_patch: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    steer: tuple[int, torch.Tensor] | None = None  # (depth, vector added at every position)


@dataclass
class Trace:
    """The pass's last-position logits, and the activations a patch takes from a clean run."""

    logits: torch.Tensor  # (vocab,)
    stream: list[torch.Tensor]  # depth 0..L, each (n, d)
    attn: list[torch.Tensor]  # per layer (n, d)
    mlp: list[torch.Tensor]


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _ablate(x: torch.Tensor, mode: str) -> torch.Tensor:
    """A tensor (n, ...) replaced by zeros or by its mean over positions (dim 0)."""
    return torch.zeros_like(x) if mode == "zero" else x.mean(0, keepdim=True).expand_as(x).clone()


def _stream_edit(x: torch.Tensor, depth: int, edits: Edits) -> torch.Tensor:
    x = x.clone()
    for (d, p), value in edits.stream_patch.items():
        if d == depth:
            x[p] = value
    if edits.steer is not None and edits.steer[0] == depth:
        x = x + edits.steer[1]
    return x


def forward(model: torch.nn.Module, ids: list[int], edits: Edits | None = None) -> Trace:
    """The model's computation from its weights, with `edits` applied where they belong."""
    edits = edits or Edits()
    cfg = model.config
    w = {k: v.detach().double() for k, v in model.state_dict().items()}
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    eps = cfg.rms_norm_eps
    theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or cfg.rope_theta
    n = len(ids)
    pos = torch.arange(n, dtype=torch.float64)
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angles = torch.cat([pos[:, None] * inv[None]] * 2, dim=-1)  # (n, hd)
    cos, sin = angles.cos(), angles.sin()
    mask = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]  # (n, d)
    x = _stream_edit(x, 0, edits)
    stream, attn_outs, mlp_outs = [x], [], []
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        if p + "self_attn.qkv_proj.weight" in w:  # Phi-3: one fused matrix, q then k then v
            q, k, v = (h @ w[p + "self_attn.qkv_proj.weight"].T).split([heads * hd, kv * hd, kv * hd], dim=-1)
        else:
            q, k, v = (h @ w[p + f"self_attn.{m}_proj.weight"].T for m in "qkv")
        q = q.view(n, heads, hd).transpose(0, 1)  # (heads, n, hd)
        k = k.view(n, kv, hd).transpose(0, 1)  # (kv, n, hd)
        v = v.view(n, kv, hd).transpose(0, 1)
        q, k = q * cos + _rotate(q) * sin, k * cos + _rotate(k) * sin
        k, v = k.repeat_interleave(heads // kv, 0), v.repeat_interleave(heads // kv, 0)  # (heads, n, hd)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1)  # (heads, n, n)
        per_head = (weights @ v).transpose(0, 1)  # (n, heads, hd)
        for head in edits.heads.get(layer, []):
            per_head[:, head] = _ablate(per_head[:, head], edits.mode)
        attn = per_head.reshape(n, heads * hd) @ w[p + "self_attn.o_proj.weight"].T  # (n, d)
        if edits.parts.get(layer) == "attn":
            attn = _ablate(attn, edits.mode)
        for (l_, pos_), value in edits.attn_patch.items():
            if l_ == layer:
                attn[pos_] = value
        attn_outs.append(attn)
        mid = x + attn
        h = _rms(mid, w[p + "post_attention_layernorm.weight"], eps)
        if p + "mlp.gate_up_proj.weight" in w:  # Phi-3: gate and up fused, gate first
            gate, up = (h @ w[p + "mlp.gate_up_proj.weight"].T).chunk(2, dim=-1)
        else:
            gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        mlp = (F.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
        if edits.parts.get(layer) == "mlp":
            mlp = _ablate(mlp, edits.mode)
        for (l_, pos_), value in edits.mlp_patch.items():
            if l_ == layer:
                mlp[pos_] = value
        mlp_outs.append(mlp)
        out = mid + mlp
        if edits.parts.get(layer) == "block":
            out = x + _ablate(out - x, edits.mode)
        x = _stream_edit(out, layer + 1, edits)
        stream.append(x)
    head_w = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    logits = _rms(x, w["model.norm.weight"], eps)[-1] @ head_w.T
    return Trace(logits=logits, stream=stream, attn=attn_outs, mlp=mlp_outs)


def probs(trace: Trace) -> torch.Tensor:
    """The last position's next-token distribution."""
    return torch.softmax(trace.logits, dim=-1)
