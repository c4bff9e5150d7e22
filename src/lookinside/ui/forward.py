"""The `forward` view: every stage of one forward pass with the shapes in and out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lookinside.ui.next_token import tokens_line

if TYPE_CHECKING:
    from lookinside.core.inside.hooks import ForwardPass, LayerRun, Stage


def shape_text(shape: tuple[int, ...] | None) -> str:
    """A shape as the book writes it: [1, 6, 3072]."""
    return "" if shape is None else str(list(shape))


HEAD_LABELS = {  # (stage, operation): these shapes exist inside attention's forward, not as module outputs
    "queries": ("Q per head", "view"),
    "keys, values": ("K, V per head", "view"),
    "scores, weights": ("weights per head", "softmax(QKᵀ)"),
}


def _add_stage(table: Table, stage: Stage, indent: int, name: str | None = None) -> None:
    table.add_row(
        Text("  " * indent + (name or stage.path.rsplit(".", 1)[-1]), style="bold" if stage.depth <= 1 else ""),
        Text(stage.kind, style="cyan"),
        Text(shape_text(stage.input_shape), style="dim"),
        shape_text(stage.output_shape),
    )


def _add_heads(table: Table, result: ForwardPass, indent: int) -> None:
    for label, shape in result.head_shapes.items():
        stage, operation = HEAD_LABELS[label]
        table.add_row(Text("  " * indent + stage, style="italic"), Text(operation, style="dim"),
                      "", Text(shape_text(shape), style="italic"))


def _add_run(table: Table, run: LayerRun, result: ForwardPass) -> None:
    span = f"blocks {run.first}-{run.last} ({run.count} ×)" if run.count > 1 else f"block {run.first}"
    stages = list(run.stages)
    attention = next((s for s in stages if s.depth == 1 and s.kind.endswith("Attention")), None)
    inside = [s for s in stages if attention and s.path.startswith(f"{attention.path}.") and s.depth == 2]
    # the heads exist between the Q/K/V projections and the output projection, the attention's last call
    heads_before = inside[-1] if len(inside) > 1 else None
    for stage in stages:
        if stage is heads_before:
            _add_heads(table, result, stage.depth)
        _add_stage(table, stage, stage.depth, name=span if stage.depth == 0 else None)
        if stage is attention and heads_before is None:
            _add_heads(table, result, 2)


def forward_view(result: ForwardPass) -> RenderableType:
    """The whole `forward` screen: the tokens, then a table of stages, repeated blocks once."""
    table = Table(expand=False, title="one forward pass, stage by stage (read with forward hooks)", title_justify="left")
    table.add_column("stage", no_wrap=True, min_width=26)
    table.add_column("module")
    table.add_column("in", justify="right")
    table.add_column("out", justify="right")
    table.add_row(Text("input ids", style="bold"), "", "", shape_text(result.input_shape))
    for stage in result.before:
        _add_stage(table, stage, 0)
    for run in result.blocks:
        _add_run(table, run, result)
    for stage in result.after:
        _add_stage(table, stage, 0)
    header = Text.assemble(("model ", "dim"), (result.model, "bold"),
                           (f"   prompt tokens ({len(result.tokens)}): ", "dim"), tokens_line(result.tokens, "text"))
    legend = Text("[batch, tokens, features]; the last stage scores every vocabulary entry at every position",
                  style="dim")
    return Group(header, table, legend)
