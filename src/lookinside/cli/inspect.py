"""`llm inspect` and `llm attention`: the views whose commands do more than cli/views.py's.

inspect reads --quantize from the model options; attention loads the model with eager attention
(saying so) and can also write a PNG. Both answer through their definition in lookinside.views.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer

from lookinside.cli.inputs import text_argument
from lookinside.cli.options import (
    ChatOpt,
    JsonOpt,
    Keep,
    PromptArg,
    Remote,
    file_option,
    keep_options,
    model_options,
    remote_options,
)
from lookinside.cli.views import show_record
from lookinside.core.model.spec import LoadSpec
from lookinside.views import VIEWS

TextArg = Annotated[Optional[str], typer.Argument(
    metavar="[TEXT]", help="The text to cut into tokens (- reads stdin; or --file PATH; one trailing newline is dropped).", show_default=False,
    callback=text_argument)]
LayerOpt = Annotated[int, typer.Option("--layer", "-l", help="Which decoder block (0 is the first, -1 the last).")]
HeadOpt = Annotated[Optional[int], typer.Option(
    "--head", help="One head as a large heat map (default: all heads, small maps and a summary).", show_default=False)]
PngOpt = Annotated[Optional[Path], typer.Option(
    "--png", help="Also write the heat map(s) to this PNG file (needs Pillow).", show_default=False, dir_okay=False)]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", help="Candidates to show per layer.")]
PositionOpt = Annotated[int, typer.Option("--position", help="Which prompt position to read (-1: the last).")]
AllPositionsOpt = Annotated[bool, typer.Option("--all-positions", help="A layer-by-position grid of top tokens.")]


@model_options
@keep_options
def inspect_command(json: JsonOpt = False, *, spec: LoadSpec, keep: Keep) -> None:
    """The module tree and architecture card, built from the config alone (no weights read)."""
    from lookinside.core.inside.anatomy import on_meta
    from lookinside.core.request import InspectRequest

    view = VIEWS["inspect"]
    show_record(view, view.run(on_meta(spec), InspectRequest(spec.quantize)), json, keep)


@model_options
@remote_options
@keep_options
@file_option("prompt")
def attention(
    prompt: PromptArg = None, layer: LayerOpt = 0, head: HeadOpt = None, png: PngOpt = None,
    chat: ChatOpt = False, json: JsonOpt = False, *, spec: LoadSpec, keep: Keep, remote: Remote,
) -> None:
    """Attention weights of one layer as heat maps (query rows, key columns, the causal mask dotted)."""
    from lookinside.cli.backends import open_server
    from lookinside.cli.loading import load_here
    from lookinside.core.inside import attention as core_attention
    from lookinside.core.request import AttentionRequest
    from lookinside.ui.console import stderr_console

    view, request = VIEWS["attention"], AttentionRequest(prompt, layer=layer, head=head, chat=chat)
    if png is not None:
        from lookinside.ui import attention_png

        attention_png.require_pillow()  # before loading: a missing library should not cost a model load
    source = open_server(spec, remote)  # a server switches its own model to eager attention, and back
    if source is None:
        core_attention.precheck(spec, request)
        spec, note = core_attention.eager_spec(spec)
        if note:
            stderr_console().print(f"note: {note}", style="dim", markup=False)
        source = load_here(spec)
    maps = view.run(source, request)
    if png is not None:
        attention_png.save_png(maps, png)
        stderr_console().print(f"wrote {png}", style="dim", markup=False)
    show_record(view, maps, json, keep)
