"""Looking inside: `llm inspect`, `tokens`, `forward`, `attention`, `lens`.

Each command parses its options, makes one core call and prints one view;
torch and transformers are imported inside the bodies so `llm --help` stays fast.
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
from lookinside.core.spec import LoadSpec

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


def local_only(remote: Remote, what: str) -> None:
    """Refuse --endpoint for a view that needs the model's insides, saying why in one line."""
    if remote.endpoint:
        from lookinside.core.errors import BadInput

        raise BadInput(f"an OpenAI-compatible server does not show {what}: run this view without --endpoint, "
                       "with the model here (--device-map auto or --quantize 4bit when it is large)")


@model_options
@keep_options
def inspect_command(json: JsonOpt = False, *, spec: LoadSpec, keep: Keep) -> None:
    """The module tree and architecture card, built from the config alone (no weights read)."""
    from lookinside.core.anatomy import inspect_model
    from lookinside.ui.anatomy import anatomy_json, anatomy_view
    from lookinside.ui.console import show

    anatomy = inspect_model(spec)
    show(anatomy, anatomy_view, anatomy_json, as_json=json, keep=keep)


@model_options
@keep_options
@file_option("text")
def tokens(text: TextArg = None, chat: ChatOpt = False, json: JsonOpt = False, *, spec: LoadSpec, keep: Keep) -> None:
    """Each token of TEXT with its id and piece (loads only the tokenizer)."""
    from lookinside.core.loading import load_tokenizer
    from lookinside.core.tokens import tokenize
    from lookinside.ui.console import show
    from lookinside.ui.tokens import tokens_json, tokens_view

    result = tokenize(spec.model, load_tokenizer(spec), text, chat=chat)
    show(result, tokens_view, tokens_json, as_json=json, keep=keep)


@model_options
@remote_options
@keep_options
@file_option("prompt")
def forward(prompt: PromptArg = None, chat: ChatOpt = False, json: JsonOpt = False, *, spec: LoadSpec, keep: Keep,
            remote: Remote) -> None:
    """The shapes through one forward pass, stage by stage, read with hooks."""
    local_only(remote, "the shapes inside a forward pass")
    from lookinside.core import hooks
    from lookinside.core.prompting import check_prompt
    from lookinside.ui.console import show
    from lookinside.ui.forward import forward_json, forward_view
    from lookinside.ui.progress import load_with_progress

    check_prompt(prompt)
    result = hooks.trace_forward(load_with_progress(spec), prompt, chat=chat)
    show(result, forward_view, forward_json, as_json=json, keep=keep)


@model_options
@remote_options
@keep_options
@file_option("prompt")
def attention(
    prompt: PromptArg = None, layer: LayerOpt = 0, head: HeadOpt = None, png: PngOpt = None,
    chat: ChatOpt = False, json: JsonOpt = False, *, spec: LoadSpec, keep: Keep, remote: Remote,
) -> None:
    """Attention weights of one layer as heat maps (query rows, key columns, the causal mask dotted)."""
    local_only(remote, "attention weights")
    from lookinside.core import attention as core_attention
    from lookinside.core.request import AttentionRequest
    from lookinside.ui.attention import attention_json, attention_view
    from lookinside.ui.console import show, stderr_console
    from lookinside.ui.progress import load_with_progress

    request = AttentionRequest(prompt, layer=layer, head=head, chat=chat)
    core_attention.precheck(spec, request)
    if png is not None:
        from lookinside.ui import attention_png

        attention_png.require_pillow()  # before loading: a missing library should not cost a model load
    spec, note = core_attention.eager_spec(spec)
    if note:
        stderr_console().print(f"note: {note}", style="dim", markup=False)
    maps = core_attention.attention_maps(load_with_progress(spec), request)
    if png is not None:
        attention_png.save_png(maps, png)
        stderr_console().print(f"wrote {png}", style="dim", markup=False)
    show(maps, attention_view, attention_json, as_json=json, keep=keep)


@model_options
@remote_options
@keep_options
@file_option("prompt")
def lens(
    prompt: PromptArg = None, top_k: TopKOpt = 3, position: PositionOpt = -1, all_positions: AllPositionsOpt = False,
    chat: ChatOpt = False, json: JsonOpt = False, *, spec: LoadSpec, keep: Keep, remote: Remote,
) -> None:
    """The logit lens: each layer's residual stream through the final norm and LM head."""
    local_only(remote, "each layer's residual stream")
    from lookinside.core import lens as core_lens
    from lookinside.core.request import LensRequest
    from lookinside.ui.console import show
    from lookinside.ui.lens import lens_json, lens_view
    from lookinside.ui.progress import load_with_progress

    request = LensRequest(prompt, top_k=top_k, position=position, all_positions=all_positions, chat=chat)
    result = core_lens.logit_lens(load_with_progress(spec), request)
    show(result, lens_view, lens_json, as_json=json, keep=keep)
