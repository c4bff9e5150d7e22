"""`llm next-token`: the top-k next-token table for a prompt."""

from typing import Annotated

import typer

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


@model_options
@remote_options
@keep_options
@file_option("prompt")
def next_token(
    prompt: PromptArg = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many candidates to list.")] = 10,
    temperature: Annotated[float | None, typer.Option(
        "--temperature", "-t", help="Also show the probabilities at this temperature.", show_default=False)] = None,
    chat: ChatOpt = False,
    json: JsonOpt = False,
    *,
    spec: LoadSpec,
    keep: Keep,
    remote: Remote,
) -> None:
    """Show the most probable next tokens, with the prompt's tokens and the forward pass's shapes."""
    from lookinside.cli.backends import open_backend
    from lookinside.core.request import NextTokenRequest
    from lookinside.ui.console import show
    from lookinside.ui.next_token import next_token_json, next_token_view

    request = NextTokenRequest(prompt, top_k=top_k, temperature=temperature, chat=chat)
    result = open_backend(spec, remote).next_token(request)
    show(result, next_token_view, next_token_json, as_json=json, keep=keep)
