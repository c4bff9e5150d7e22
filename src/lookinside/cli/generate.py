"""`llm generate`: one completion, streamed; plain text, --json or --jsonl."""

import sys
from dataclasses import replace
from typing import Annotated, Optional

import typer

from lookinside.cli.backends import open_backend
from lookinside.cli.edge import EXIT_INTERRUPTED, fail
from lookinside.cli.inputs import text_argument, text_or_file
from lookinside.cli.options import (
    SAMPLING_PANEL,
    ChatOpt,
    FileOpt,
    MaxNewTokensOpt,
    Remote,
    model_options,
    remote_options,
    sampling_options,
)
from lookinside.core.chat.defaults import ChatRequest
from lookinside.core.errors import BadInput
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import GenerationSettings
from lookinside.ui.generate import Source, stats_line, stream_out

PromptText = Annotated[Optional[str], typer.Argument(
    metavar="[PROMPT]", help="The text to continue (- reads stdin; one trailing newline is dropped).", show_default=False, callback=text_argument)]
StopOpt = Annotated[Optional[list[str]], typer.Option(
    "--stop", help="Stop when this text appears (repeatable); it is not printed.", rich_help_panel=SAMPLING_PANEL,
    show_default=False)]
IgnoreEosOpt = Annotated[bool, typer.Option(
    "--ignore-eos", help="Go on past end tokens until --max-new-tokens.", rich_help_panel=SAMPLING_PANEL)]


@model_options
@remote_options
@sampling_options
def generate(
    prompt: PromptText = None,
    file: FileOpt = None,
    max_new_tokens: MaxNewTokensOpt = 128,
    stop: StopOpt = None,
    ignore_eos: IgnoreEosOpt = False,
    chat: ChatOpt = False,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object when done.")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Print one JSON line per step as it streams, then the record.")] = False,
    compile: Annotated[bool, typer.Option(
        "--compile", help="Decode with a torch.compile'd step over a static cache (compiles first; pays off "
        "for small models and long runs: docs/benchmarks.md).")] = False,
    *,
    spec: LoadSpec,
    request: ChatRequest,
    remote: Remote,
) -> None:
    """Continue a prompt and stream the completion (the model's sampling defaults, your flags on top).

    Plain text goes to stdout as it is generated, and a stats line to stderr when it is a terminal; --json prints the
    record: the run (text, token ids, per-token probabilities, log-probabilities, ranks and alternatives, the finish
    reason, the seed and the timing) and the text of each token id; --jsonl one line per step, then that record.
    """
    from lookinside.ui.console import stderr_console  # deferred: rich

    if json and jsonl:
        raise BadInput("--json and --jsonl: choose one")
    text = text_or_file(prompt, file)
    request = replace(request, max_new_tokens=max_new_tokens)  # checked again: bad values fail before loading
    config = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=tuple(stop or ()), ignore_eos=ignore_eos,
                                compile=compile)
    backend = open_backend(spec, remote)
    if compile and (backend.weights is None or not backend.capabilities.kv_cache_switch):
        raise BadInput("--compile needs the model here: a server compiles (or not) on its own side")
    params = request.settings(backend.generation_config).params
    source = Source(backend.name, text, backend.prompt_ids(text, chat), backend.token_text)
    run = stream_out(backend.generate(text, params, config, chat), source,
                     "json" if json else "jsonl" if jsonl else "text")
    if compile:
        from lookinside.core.decoding.compiled import Compiled  # deferred: torch

        if note := Compiled.for_model(backend.weights).note:
            stderr_console().print(f"note: {note}", highlight=False, markup=False)
    if not (json or jsonl) and sys.stderr is not None and sys.stderr.isatty():
        stderr_console().print(f"[dim]{stats_line(run)}[/]", highlight=False)
    if run.interrupted:  # what came is printed (in the JSON too, finish "interrupted"); the exit code says it was cut

        fail(f"interrupted after {len(run.steps)} tokens; the output above stops there", EXIT_INTERRUPTED)
