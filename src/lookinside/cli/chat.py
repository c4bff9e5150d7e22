"""`llm chat`: talk to the model in a REPL, or answer one piped message."""

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lookinside.cli.backends import open_backend
from lookinside.cli.inputs import read_stdin, text_argument
from lookinside.cli.options import (
    MaxNewTokensOpt,
    Remote,
    model_options,
    remote_options,
    sampling_options,
)
from lookinside.core.chat.conversation import Conversation
from lookinside.core.chat.defaults import ChatRequest
from lookinside.core.errors import BadInput
from lookinside.core.model.spec import LoadSpec


@model_options
@remote_options
@sampling_options
def chat(
    question: Annotated[Optional[str], typer.Argument(
        metavar="[MESSAGE]", help="Answer this one message and exit (piped input is added below it).",
        show_default=False, callback=text_argument)] = None,
    load: Annotated[Optional[Path], typer.Option(
        "--load", help="Go on with a conversation saved by /save (or autosaved).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help=(
        "Go on with the last conversation you had at the prompt (every one is autosaved; "
        "one-shot and piped questions are kept apart)."))] = False,
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system prompt for the conversation.",
                                                  show_default=False)] = None,
    plain: Annotated[bool, typer.Option("--plain", help="Print replies as raw text, not rendered markdown.")] = False,
    no_history: Annotated[bool, typer.Option("--no-history", help="Keep no input history on disk.")] = False,
    no_trim: Annotated[bool, typer.Option(
        "--no-trim", help="Refuse a turn that does not fit the context instead of dropping the oldest turns.")] = False,
    max_new_tokens: MaxNewTokensOpt = 256,
    *,
    spec: LoadSpec,
    request: ChatRequest,
    remote: Remote,
) -> None:
    """Chat with the model: streamed replies, slash commands (/help), and a look at each token's odds.

    --resume and --load go on with the model the conversation was held with, unless --model says another.
    """
    from lookinside.core.chat.transcripts import continued  # deferred: tempfile (llm --help)
    from lookinside.core.paths import last_session, new_chat_file  # deferred: platformdirs (llm --help)
    from lookinside.ui.console import stdout_console  # deferred: rich
    from lookinside.ui.repl import ChatRepl, make_session  # deferred: rich

    request = replace(request, max_new_tokens=max_new_tokens, trim=not no_trim)
    if load is not None and resume:
        raise BadInput("--load FILE or --resume: choose one")
    source = last_session() if resume else load
    saved, held_with = continued(source, system, request) if source is not None else (None, None)  # before loading
    piped = read_stdin() if sys.stdin is None or not sys.stdin.isatty() else None
    message = "\n\n".join(part.strip() for part in (question, piped) if part is not None and part.strip())
    if (question is not None or piped is not None) and not message:
        return  # nothing to answer
    backend = open_backend(_held_with(spec, remote, held_with), remote)
    conversation = saved or Conversation(system=system, settings=request.settings(backend.generation_config))
    console = stdout_console()
    one_shot = question is not None or piped is not None
    repl = ChatRepl(backend, conversation, console, None if one_shot else make_session(keep_history=not no_history),
                    "plain" if plain or one_shot or not console.is_terminal else "markdown")
    repl.autosave = source if resume else new_chat_file("asked" if one_shot else "session")
    if one_shot:
        repl.show_stats = False
        repl.send(message)
        repl.save_quietly()
        if repl.stream_broken:  # the reply was cut (and kept): not a success for a script
            raise typer.Exit(1)
        return
    resumed = f" · going on from {source} ({len(conversation.messages)} messages)" if source else ""
    console.print(f"[dim]chatting with {backend.name}{resumed} · /help lists the commands · Ctrl-D leaves[/]")
    if saved is not None:
        repl.recap()
    raise typer.Exit(repl.run())


def _held_with(spec: LoadSpec, remote: Remote, model: Any) -> LoadSpec:
    """The model a saved conversation was held with, where the user named none (no --model, no --endpoint)."""
    if spec.model_named or remote.endpoint or not isinstance(model, str) or not model:
        return spec
    return replace(spec, model=model, model_named=True)
