"""`llm diff`: what another precision, attention kernel or model does to the predictions, token by token."""

from dataclasses import replace
from typing import Annotated, Optional

import typer

from lookinside.cli.inputs import text_argument, text_or_file
from lookinside.cli.loading import load_here
from lookinside.cli.options import FileOpt, JsonOpt, Keep, keep_options, model_options
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import whole

AGAINST = "Against (B)"
TextArg = Annotated[Optional[str], typer.Argument(
    metavar="[TEXT]", help="The text both models read (- reads stdin; one trailing newline is dropped).", show_default=False, callback=text_argument)]


@model_options
@keep_options
def diff(
    text: TextArg = None,
    file: FileOpt = None,
    against: Annotated[Optional[str], typer.Option(
        "--against", metavar="NAME", rich_help_panel=AGAINST, show_default=False,
        help="Model B: a Hub id, a directory, a GGUF file, ollama:NAME or tiny (default: --model again, loaded as "
        "the options below say).")] = None,
    against_dtype: Annotated[Optional[str], typer.Option(
        "--against-dtype", metavar="DTYPE", rich_help_panel=AGAINST, show_default=False,
        help="Load B in this dtype (auto|bfloat16|float16|float32).")] = None,
    against_attn: Annotated[Optional[str], typer.Option(
        "--against-attn", metavar="IMPL", rich_help_panel=AGAINST, show_default=False,
        help="Load B with this attention implementation (sdpa|eager|flash_attention_2).")] = None,
    against_quantize: Annotated[Optional[str], typer.Option(
        "--against-quantize", metavar="KIND", rich_help_panel=AGAINST, show_default=False,
        help="Load B quantized: int8 (torchao) | 8bit | 4bit (bitsandbytes, CUDA).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many top tokens to compare for the overlap.")] = 10,
    chunked: Annotated[bool, typer.Option(
        "--chunked", help="Read a text longer than the context in chunks of it, each starting cold "
                          "(without it such a text is refused).")] = False,
    json: JsonOpt = False,
    *,
    spec: LoadSpec,
    keep: Keep,
) -> None:
    """Compare two models' next-token predictions over the same text: KL, same top-1, perplexity, where they part.

    A is --model as loaded by the usual options; B is --against, or the same model loaded with
    --against-dtype / --against-attn / --against-quantize. Both read the same token ids (teacher forcing), one model
    in memory at a time.
    """
    from lookinside.core.inside import diff as core_diff  # deferred: torch
    from lookinside.ui.console import show  # deferred: rich
    from lookinside.ui.diff import diff_view  # deferred: rich

    whole("--top-k", top_k, low=1)
    text = text_or_file(text, file)
    other = replace(spec, model=against or spec.model, dtype=against_dtype or spec.dtype,
                    attn=against_attn or spec.attn, quantize=against_quantize or spec.quantize)
    result = core_diff.run_diff(load_here, spec, other, text, top_k=top_k, chunked=chunked)
    show(result, diff_view, as_json=json, keep=keep)
