"""The root Typer app: global flags, and one module per command wired in below.

Command modules import only typer and light option types at the top; torch and
transformers are imported inside command bodies, so `llm --help` stays fast.
"""

from typing import Annotated

import typer

from lookinside import __version__
from lookinside.cli.attention import PNG
from lookinside.cli.bench import bench
from lookinside.cli.chat import chat
from lookinside.cli.diff import diff
from lookinside.cli.edge import friendly, run
from lookinside.cli.generate import generate
from lookinside.cli.serve import serve
from lookinside.cli.views import command_for
from lookinside.views import VIEWS

app = typer.Typer(
    name="llm",
    help="Look inside a large language model while you talk to it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: Rich help pulls in typer.rich_utils (rich.markdown, markdown_it, pygments),
    # about 0.14 s, which would put `llm --help` over its 0.3 s budget (docs/startup.md).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"lookinside {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_show_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Look inside a large language model while you talk to it."""


# What a view's command has beyond its request, declared once (cli/views.py's Extra).
EXTRAS = {"attention": (PNG,)}

app.command("chat", short_help="Chat with the model: a streaming REPL with /why and /probs.")(friendly(chat))
app.command("generate", short_help="Continue a prompt: the completion, streamed (--json, --jsonl).")(friendly(generate))
for view in VIEWS.values():  # every view in lookinside.views is a command
    app.command(view.name, short_help=view.short)(friendly(command_for(view, EXTRAS.get(view.name, ()))))
app.command("bench", short_help="Time generation with the KV cache on and off.")(friendly(bench))
app.command("diff", short_help="What another dtype, attention or model changes, token by token.")(friendly(diff))
app.command("serve", short_help="Load the model once and serve it over HTTP (OpenAI-compatible).")(friendly(serve))

def main(prog_name: str | None = None) -> None:
    """Console-script entry point (`llm`, `lookinside`): the app, with no traceback on any way out."""
    run(app, prog_name=prog_name)
