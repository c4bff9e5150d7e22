"""`llm compare`: the greedy continuation beside N sampled ones, coloured by probability."""

from typing import Annotated, Any

import typer

from lookinside.cli.generate import IgnoreEosOpt, StopOpt
from lookinside.cli.options import (
    SAMPLING_PANEL,
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
from lookinside.core.model.spec import LoadSpec

SamplesOpt = Annotated[int, typer.Option("--samples", "-s", help="How many sampled runs to show beside the greedy one.",
                                         rich_help_panel=SAMPLING_PANEL)]


@model_options
@remote_options
@keep_options
@sampling_options
@file_option("prompt")
def compare(
    prompt: PromptArg = None,
    samples: SamplesOpt = 3,
    max_new_tokens: MaxNewTokensOpt = 40,
    stop: StopOpt = None,
    ignore_eos: IgnoreEosOpt = False,
    chat: ChatOpt = False,
    json: JsonOpt = False,
    *,
    spec: LoadSpec,
    keep: Keep,
    sampling: dict[str, Any],
    remote: Remote,
) -> None:
    """Greedy decoding beside sampled decoding: same prompt, each token coloured by its probability.

    Samples use temperature 1 and no filters unless told otherwise; sample i uses seed --seed + i
    (a seed is drawn and shown when --seed is not given), so a comparison can be repeated exactly.
    """
    from lookinside.cli.views import answer_here, show_record
    from lookinside.core.decoding.sampling import SamplingParams
    from lookinside.core.request import CompareRequest, GenerationSettings
    from lookinside.views import VIEWS

    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=tuple(stop or ()), ignore_eos=ignore_eos)
    request = CompareRequest(prompt, SamplingParams(**sampling), settings, samples=samples, chat=chat)
    show_record(VIEWS["compare"], answer_here(VIEWS["compare"], request, spec, remote), json, keep)
