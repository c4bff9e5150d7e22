"""The `inspect` view: the module tree as the book prints it, and the architecture card."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from lookinside.core.model.quantize import STORAGE

if TYPE_CHECKING:
    from lookinside.core.inside.anatomy import Anatomy, Architecture, ModuleNode
    from lookinside.core.records import Estimate

LINEAR = re.compile(r"in_features=(\d+), out_features=(\d+), bias=(True|False)")
PLAIN_ROPE = {("rope_type", "default"), ("partial_rotary_factor", 1.0)}  # not worth a word on the card
SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def human_bytes(n: float) -> str:
    """Bytes in binary units: 7.12 GiB, 384 KiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def short_count(n: int) -> str:
    """A parameter count in short form: 3.82 B, 98.5 M, 3.07 K."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)


def compact(detail: str) -> str:
    """PyTorch's Linear repr made short: `in_features=3072, out_features=9216, bias=False` -> `3072 → 9216`."""
    match = LINEAR.fullmatch(detail)
    if not match:
        return detail
    inp, out, bias = match.groups()
    return f"{inp} → {out}" + (", bias" if bias == "True" else "")


def _label(node: ModuleNode) -> Text:
    label = Text()
    if node.name:
        label.append(f"{node.name}: ", style="bold")
    if node.repeat > 1:
        label.append(f"{node.repeat} × ", style="bold yellow")
    label.append(node.kind, style="cyan")
    if node.detail:
        label.append(f"({compact(node.detail)})", style="dim")
    if node.tied_to:
        label.append(f"  tied to {node.tied_to}", style="magenta")
    elif node.parameters:
        each = " each" if node.repeat > 1 else ""
        label.append(f"  {node.parameters:,}{each}", style="green")
        if node.repeat > 1:
            label.append(f" = {node.total_parameters:,}", style="green")
    return label


def module_tree_view(root: ModuleNode) -> Tree:
    """The tree, one module a line, repeated blocks once with their count."""
    tree = Tree(_label(root))

    def add(branch: Tree, node: ModuleNode) -> None:
        for child in node.children:
            add(branch.add(_label(child)), child)

    add(tree, root)
    return tree


def card_rows(card: Architecture) -> list[tuple[str, str]]:
    """The card as (fact, value) rows in the book's vocabulary."""
    if card.attention == "MHA":
        attention = f"MHA: {card.heads} heads, each with its own K/V ({card.kv_heads} KV heads)"
    elif card.attention == "MQA":
        attention = f"MQA: {card.heads} query heads share 1 KV head"
    else:
        attention = f"GQA: {card.heads} query heads share {card.kv_heads} KV heads (groups of {card.group_size})"
    ffn = card.ffn
    if card.intermediate_size:
        ffn += f": {card.hidden_size:,} → {card.intermediate_size:,} → {card.hidden_size:,}"
    positions = card.positions
    if card.rope:
        theta = card.rope.get("rope_theta")
        extras = [f"{k}={v}" for k, v in card.rope.items() if k != "rope_theta" and (k, v) not in PLAIN_ROPE]
        positions += (f", theta {theta:,g}" if theta is not None else "") + (f" ({', '.join(extras)})" if extras else "")
    kv = card.kv_bytes_per_token
    half = kv.get("bfloat16", 0)
    return [
        ("architecture", f"{card.architecture} ({card.model_type})"),
        ("vocabulary", f"{card.vocab_size:,} tokens"),
        ("d_model", f"{card.hidden_size:,}"),
        ("layers", f"{card.layers} decoder blocks"),
        ("attention", attention),
        ("head dim", f"{card.head_dim} ({card.heads} × {card.head_dim} = {card.heads * card.head_dim:,})"),
        ("feed-forward", ffn),
        ("norm", card.norm + (f", eps {card.norm_eps:g}" if card.norm_eps is not None else "")),
        ("positions", positions),
        ("sliding window", f"{card.sliding_window:,} tokens" if card.sliding_window else "none"),
        ("context length", f"{card.context_length:,} tokens"),
        ("embeddings", "tied (the LM head reuses the input embeddings)" if card.tied_embeddings
         else "untied (the LM head has its own weights)"),
        ("parameters", f"{card.parameters:,} ({short_count(card.parameters)})"),
        ("weights", "  ".join(f"{SHORT_DTYPES.get(d, d)} {human_bytes(b)}" for d, b in card.weight_bytes.items())),
        ("KV cache", f"{human_bytes(half)} per token in bf16/fp16 ({human_bytes(kv.get('float32', 0))} in fp32); "
                     f"{human_bytes(half * card.context_length)} for the full {card.context_length:,}-token context"),
    ]


def card_view(card: Architecture) -> Table:
    """The architecture card as a two-column table."""
    table = Table(title=f"{card.model}", title_justify="left", show_header=False, expand=False)
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for fact, value in card_rows(card):
        table.add_row(fact, value)
    return table


def anatomy_view(anatomy: Anatomy) -> RenderableType:
    """The whole `inspect` screen: the tree, then the card."""
    note = Text("built on the meta device from the config alone: no weights were read", style="dim")
    parts = [module_tree_view(anatomy.tree), Text(), card_view(anatomy.card), note]
    return Group(*parts, Text(), quantize_view(anatomy.quantized)) if anatomy.quantized else Group(*parts)


QUANTIZE_NAMES = {"int8": "int8 weights (torchao)", "8bit": "8-bit (bitsandbytes)", "4bit": "4-bit NF4 (bitsandbytes)",
                  "int4": "int4 weights in groups of 32", "int8-weight": "int8 weight-only",
                  "int8-dynamic": "int8 weights, dynamic int8 matmuls"}


def quantize_view(estimate: Estimate) -> Text:
    """The footprint under --quantize, with its arithmetic."""
    bits, block = STORAGE[estimate.kind]
    scales = f"one float32 scale per {block} weights" if block else "one float32 scale per output row"
    text = Text()
    text.append(f"--quantize {estimate.kind}: {QUANTIZE_NAMES[estimate.kind]}, estimated from the shapes\n", style="bold")
    text.append(f"  decoder linear weights  {estimate.converted_params:>15,} × {bits} bits"
                f"  = {human_bytes(estimate.converted_bytes)}\n")
    text.append(f"  their scales            {scales}  = {human_bytes(estimate.scale_bytes)}\n")
    text.append(f"  embeddings, LM head, norms {estimate.kept_params:>12,} × 16 bits = {human_bytes(estimate.kept_bytes)}\n")
    text.append(f"  weights in all          {human_bytes(estimate.total_bytes)}", style="bold")
    text.append(f" (against {human_bytes(2 * (estimate.converted_params + estimate.kept_params))} in bf16/fp16)")
    return text
