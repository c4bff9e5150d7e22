"""Attention weights of one layer: the (query x key) maps per head, and what each head does.

Only eager attention forms the weights matrix (SDPA and flash kernels never write it
out), so `attention_maps` switches a model to eager first, and `eager_spec` loads it that way.
The summaries name the book's patterns: how spread out a head is (entropy), how much
it parks on the first token (an attention sink), how much it looks one token back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from lookinside.core.decoding.tokens import pieces
from lookinside.core.inside import passes
from lookinside.core.records import AttentionMaps, HeadSummary, Piece  # noqa: F401  (the records live there)

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.core.model.spec import LoadSpec
    from lookinside.core.request import AttentionRequest

# Every head's map is kept (for the grid, --json and --png) only for prompts this short:
# 32 heads of a 2,000-token prompt would be 128 million numbers; the summaries are always kept.
KEEP_ALL_HEADS_UP_TO = 64


def eager_spec(spec: LoadSpec) -> tuple[LoadSpec, str | None]:
    """The spec to load for attention maps (eager: only it forms the weights), and a note when that changed it."""
    if spec.attn == "eager":
        return spec, None
    return replace(spec, attn="eager"), (f"using eager attention instead of {spec.attn}: "
                                         "only eager attention forms the weights matrix")


def precheck(spec: LoadSpec, request: AttentionRequest) -> None:
    """Check --layer and --head against the config before the weights are loaded."""
    from lookinside.core.model.loading import load_config_offline  # deferred: torch

    config = load_config_offline(spec.model, trust_remote_code=spec.trust_remote_code)
    request.resolved(config.num_hidden_layers, config.num_attention_heads)


def prepare(spec: LoadSpec, request: AttentionRequest) -> tuple[LoadSpec, str | None]:
    """What to load for `request` here: checked against the config first, then with eager attention (and the note)."""
    precheck(spec, request)
    return eager_spec(spec)


def use_eager(lm: LM) -> None:
    """Make the model form its attention weights (a no-op when it already does)."""
    if lm.attn_implementation != "eager":
        lm.model.set_attn_implementation("eager")


def attention_of(lm: LM, request: AttentionRequest) -> AttentionMaps:
    """`llm attention`: the maps, with the model switched to eager attention for the pass and back after."""
    before = lm.attn_implementation
    try:
        return attention_maps(lm, request)
    finally:
        if lm.attn_implementation != before:
            lm.model.set_attn_implementation(before)  # the model is left as it was given


def attention_maps(lm: LM, request: AttentionRequest) -> AttentionMaps:
    """Run the prompt once with eager attention and keep one layer's weights."""
    config = lm.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    layer, head = request.resolved(layers, heads)
    ids = passes.prompt_ids(lm, request.prompt, request.chat)
    use_eager(lm)
    out = passes.forward(lm, ids, output_attentions=True)
    weights = out.attentions[layer][0].float().cpu()  # (heads, n, n)
    kept = [head] if head is not None else range(heads) if len(ids) <= KEEP_ALL_HEADS_UP_TO else []
    return AttentionMaps(
        model=lm.name,
        prompt=request.prompt,
        tokens=tuple(pieces(lm.tokenizer, ids)),
        layer=layer,
        layers=layers,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head=head,
        weights={h: tuple(tuple(row) for row in weights[h].tolist()) for h in kept},
        summaries=tuple(summarize_head(i, weights[i]) for i in range(weights.shape[0])),
        sliding_window=getattr(config, "sliding_window", None),
    )


def summarize_head(head: int, weights: torch.Tensor) -> HeadSummary:
    """Entropy, first-token, previous-token and self shares of one head's (n, n) map."""
    n = weights.shape[0]
    if n < 2:
        return HeadSummary(head, 0.0, 1.0, 0.0, 1.0)
    rows = weights[1:]  # (n-1, n): row 0 can only see itself, so it tells nothing
    plogp = torch.where(rows > 0, rows * torch.log2(rows.clamp_min(1e-30)), torch.zeros_like(rows))
    entropy = float(-plogp.sum(-1).mean())
    index = torch.arange(1, n)
    return HeadSummary(
        head=head,
        entropy=entropy,
        first_token=float(rows[:, 0].mean()),
        previous_token=float(rows[index - 1, index - 1].mean()),
        self_token=float(rows[index - 1, index].mean()),
    )

