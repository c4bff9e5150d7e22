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
from lookinside.cli.diff import diff
from lookinside.cli.edge import friendly, run
from lookinside.cli.generate import generate
from lookinside.cli.inspect import attention, inspect_command
from lookinside.cli.interventions import ablate, patch, steer
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


app.command("chat", short_help="Chat with the model: a streaming REPL with /why and /probs.")(friendly(chat))
app.command("generate", short_help="Continue a prompt: the completion, streamed (--json, --jsonl).")(friendly(generate))
app.command("next-token", short_help="The top-k next tokens, with the prompt's tokens and shapes.")(
    friendly(command_for(VIEWS["next-token"])))
app.command("compare", short_help="Greedy decoding beside sampled decoding.")(friendly(compare))
app.command("bench", short_help="Time generation with the KV cache on and off.")(friendly(bench))
app.command("diff", short_help="What another dtype, attention or model changes, token by token.")(friendly(diff))
app.command("inspect", short_help="The module tree and architecture card (config only).")(friendly(inspect_command))
app.command("tokens", short_help="Each token's id and piece (tokenizer only).")(friendly(command_for(VIEWS["tokens"])))
app.command("forward", short_help="The shapes through one forward pass, stage by stage.")(
    friendly(command_for(VIEWS["forward"])))
app.command("attention", short_help="Attention heat maps of one layer.")(friendly(attention))
app.command("lens", short_help="The logit lens: what each layer would predict.")(friendly(command_for(VIEWS["lens"])))
app.command("serve", short_help="Load the model once and serve it over HTTP (OpenAI-compatible).")(friendly(serve))
app.command("ablate", short_help="Remove heads or layers: the next-token table before and after.")(friendly(ablate))
app.command("patch", short_help="Activation patching: clean activations put into a corrupted run.")(friendly(patch))
app.command("steer", short_help="Add a direction to the residual stream while generating.")(friendly(steer))


def main(prog_name: str | None = None) -> None:
    """Console-script entry point (`llm`, `lookinside`): the app, with no traceback on any way out."""
    run(app, prog_name=prog_name)
