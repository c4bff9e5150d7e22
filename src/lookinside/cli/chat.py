"""`llm chat`: talk to the model in a REPL, or answer one piped message."""

import sys
from typing import Annotated, Any

import typer

from lookinside.cli.options import MaxNewTokensOpt, model_options, sampling_options
from lookinside.core.spec import LoadSpec


@model_options
@sampling_options
def chat(
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system prompt for the conversation.",
                                                  show_default=False)] = None,
    plain: Annotated[bool, typer.Option("--plain", help="Print replies as raw text, not rendered markdown.")] = False,
    no_history: Annotated[bool, typer.Option("--no-history", help="Keep no input history on disk.")] = False,
    no_trim: Annotated[bool, typer.Option(
        "--no-trim", help="Refuse a turn that does not fit the context instead of dropping the oldest turns.")] = False,
    max_new_tokens: MaxNewTokensOpt = 256,
    *,
    spec: LoadSpec,
    sampling: dict[str, Any],
) -> None:
    """Chat with the model: streamed replies, slash commands (/help), and a look at each token's odds."""
    from lookinside.cli.inputs import read_stdin
    from lookinside.core.conversation import Conversation, chat_settings
    from lookinside.ui.console import stdout_console
    from lookinside.ui.progress import load_with_progress
    from lookinside.ui.repl import ChatRepl, make_session

    chat_settings(None, sampling, max_new_tokens)  # refuse bad values before the model loads
    piped = read_stdin() if sys.stdin is None or not sys.stdin.isatty() else None
    if piped is not None and not piped.strip():
        return  # nothing to answer
    lm = load_with_progress(spec)
    settings = chat_settings(lm.model.generation_config, sampling, max_new_tokens, trim=not no_trim)
    conversation = Conversation(system=system, settings=settings)
    console = stdout_console()
    if piped is not None:
        repl = ChatRepl(lm, conversation, console, mode="plain")
        repl.show_stats = False
        repl.send(piped.strip())
        return
    console.print(f"[dim]chatting with {lm.name} · /help lists the commands · Ctrl-D leaves[/]")
    session = make_session(keep_history=not no_history)
    mode = "plain" if plain or not console.is_terminal else "markdown"
    raise typer.Exit(ChatRepl(lm, conversation, console, session, mode).run())
