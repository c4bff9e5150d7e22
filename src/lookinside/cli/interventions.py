"""Changing the inside: `llm ablate`, `llm patch`, `llm steer`.

Each command builds its request (checked before anything loads), makes one core call and prints
one view; torch and transformers are imported inside the bodies so `llm --help` stays fast.
"""

from typing import Annotated, Any, Optional

import typer

from lookinside.cli.options import (
    ChatOpt,
    JsonOpt,
    Keep,
    MaxNewTokensOpt,
    PromptArg,
    Remote,
    file_option,
    keep_options,
    model_options,
    remote_options,
    sampling_options,
)
from lookinside.cli.views import answer_here, show_record
from lookinside.core.model.spec import LoadSpec
from lookinside.views import VIEWS

HeadsOpt = Annotated[Optional[list[str]], typer.Option(
    "--head", metavar="L.H", show_default=False,
    help="Ablate head H of layer L, e.g. 0.1 (repeatable; negative numbers count from the end).")]
AblateLayerOpt = Annotated[Optional[int], typer.Option(
    "--layer", "-l", show_default=False, help="Ablate one layer's --part (0 is the first block, -1 the last).")]
AblatePartOpt = Annotated[str, typer.Option(
    "--part", metavar="PART", help="With --layer: attn | mlp (the sublayer's output) | block (its whole contribution).")]
ModeOpt = Annotated[str, typer.Option(
    "--mode", metavar="MODE", help="zero: put zeros in its place; mean: its mean over the prompt's positions.")]
SweepOpt = Annotated[Optional[str], typer.Option(
    "--sweep", metavar="KIND", show_default=False,
    help="heads: every head alone, as a layers x heads heat map; layers: every layer's attn, mlp and block alone.")]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", help="Rows of the next-token tables.")]
CleanOpt = Annotated[Optional[str], typer.Option(
    "--clean", metavar="TEXT", show_default=False, help="The prompt whose activations are put back.")]
CorruptOpt = Annotated[Optional[str], typer.Option(
    "--corrupt", metavar="TEXT", show_default=False,
    help="The prompt that runs, patched one cell at a time (same number of tokens as --clean).")]
TargetOpt = Annotated[Optional[str], typer.Option(
    "--target", metavar="TOKEN", show_default=False,
    help="The token whose probability to watch, e.g. ' Paris' (one token; default: the clean run's top token).")]
PatchPartOpt = Annotated[str, typer.Option(
    "--part", metavar="PART", help="resid: the residual stream; attn or mlp: that sublayer's output.")]
AddOpt = Annotated[Optional[str], typer.Option(
    "--add", metavar="TEXT", show_default=False, help="The text whose direction is added.")]
SubtractOpt = Annotated[Optional[str], typer.Option(
    "--subtract", metavar="TEXT", show_default=False, help="The text whose direction is taken away.")]
SteerLayerOpt = Annotated[Optional[int], typer.Option(
    "--layer", "-l", show_default=False, help="The depth: 0 is the embeddings' output, i the residual stream after "
    "block i-1. [default: the middle block's]")]
AlphaOpt = Annotated[Optional[float], typer.Option("--alpha", "-a", show_default=False, help=(
    "How strongly to add the vector (a finite number). [default: sized to 0.75 of the prompt's own stream there, "
    "docs/interventions.md]"))]


@model_options
@remote_options
@keep_options
@file_option("prompt")
def ablate(
    prompt: PromptArg = None, head: HeadsOpt = None, layer: AblateLayerOpt = None, part: AblatePartOpt = "block",
    mode: ModeOpt = "zero", sweep: SweepOpt = None, top_k: TopKOpt = 10, chat: ChatOpt = False,
    json: JsonOpt = False, *, spec: LoadSpec, keep: Keep, remote: Remote,
) -> None:
    """Remove heads or a layer's part and compare the next-token table before and after, or sweep them all.

    A head is ablated in its slice of the attention output, before the output projection; a layer's attn or
    mlp in its output, a block in its contribution to the residual stream.
    """
    from lookinside.core.inside.interventions.requests import AblateRequest, parse_head

    request = AblateRequest(prompt or "", heads=tuple(parse_head(h) for h in head or ()), layer=layer, part=part,
                            mode=mode, sweep=sweep, top_k=top_k, chat=chat)  # type: ignore[arg-type]
    show_record(VIEWS["ablate"], answer_here(VIEWS["ablate"], request, spec, remote), json, keep)


@model_options
@remote_options
@keep_options
def patch(
    clean: CleanOpt = None, corrupt: CorruptOpt = None, target: TargetOpt = None, part: PatchPartOpt = "resid",
    chat: ChatOpt = False, json: JsonOpt = False, *, spec: LoadSpec, keep: Keep, remote: Remote,
) -> None:
    """Activation patching: the corrupted prompt run with the clean run's activation put back at each (layer, position).

    The heat map shows the target token's probability per cell; the last layer at the last position gives back the
    clean probability. --json's prob[layer][position] counts layer 0 as the embeddings' output.
    """
    from lookinside.core.errors import BadInput
    from lookinside.core.inside.interventions.requests import PatchRequest

    if clean is None or corrupt is None:
        raise BadInput('give both prompts: --clean "The capital of France is" --corrupt "The capital of Japan is"')
    request = PatchRequest(clean, corrupt, target=target, part=part, chat=chat)  # type: ignore[arg-type]
    show_record(VIEWS["patch"], answer_here(VIEWS["patch"], request, spec, remote), json, keep)


@model_options
@remote_options
@sampling_options
@keep_options
@file_option("prompt")
def steer(
    prompt: PromptArg = None, add: AddOpt = None, subtract: SubtractOpt = None, layer: SteerLayerOpt = None,
    alpha: AlphaOpt = None, max_new_tokens: MaxNewTokensOpt = 24, chat: ChatOpt = False,
    json: JsonOpt = False, *, spec: LoadSpec, sampling: dict[str, Any], keep: Keep, remote: Remote,
) -> None:
    """Activation addition: generate with and without alpha x (stream of --add - stream of --subtract) added.

    Each text's residual stream is read at --layer at its last position; the difference is added at every
    position while generating. Both runs use the same seed (greedy unless --temperature is given).
    """
    from lookinside.core.decoding.sampling import SamplingParams
    from lookinside.core.errors import BadInput
    from lookinside.core.inside.interventions.requests import SteerRequest

    if add is None:
        raise BadInput('give the direction to add: --add " Japan" (and --subtract " France" to take one away)')
    request = SteerRequest(prompt or "", add=add, subtract=subtract, layer=layer, alpha=alpha,
                           params=SamplingParams(**{"temperature": 0.0, **sampling}), max_new_tokens=max_new_tokens,
                           chat=chat)
    show_record(VIEWS["steer"], answer_here(VIEWS["steer"], request, spec, remote), json, keep)
