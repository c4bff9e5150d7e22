"""The root Typer app: global flags, and one module per command wired in below.

Command modules import only typer and light option types at the top; torch and
transformers are imported inside command bodies, so `llm --help` stays fast.
"""

from typing import Annotated

import typer

from lookinside import __version__
from lookinside.cli.bench import bench
from lookinside.cli.chat import chat
from lookinside.cli.compare import compare
from lookinside.cli.edge import friendly
from lookinside.cli.inspect import attention, forward, inspect_command, lens, tokens
from lookinside.cli.next_token import next_token

app = typer.Typer(
    name="llm",
    help="Look inside a large language model while you talk to it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
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


app.command("chat")(friendly(chat))
app.command("next-token")(friendly(next_token))
app.command("compare")(friendly(compare))
app.command("bench")(friendly(bench))
app.command("inspect")(friendly(inspect_command))
app.command("tokens")(friendly(tokens))
app.command("forward")(friendly(forward))
app.command("attention")(friendly(attention))
app.command("lens")(friendly(lens))


def main() -> None:
    """Console-script entry point (`llm`, `lookinside`)."""
    app()
