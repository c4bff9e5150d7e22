"""A command for every view in lookinside.views: its options come from the request's fields.

`command_for(view)` gives a Typer command whose argument is the request's text field (also
`-` or `--file PATH`), with one option per other field (flags and help from the field's
metadata, core/request.py's `option`), the model, remote and --svg/--html options, and --json.
Its body builds the request (checked before anything loads), opens what the view needs
(`open_for`), answers it and shows the record. No torch at import.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from lookinside.cli.inputs import text_argument
from lookinside.cli.options import JsonOpt, Keep, Remote, file_option, keep_options, model_options, remote_options
from lookinside.core.model.spec import LoadSpec
from lookinside.views import View


def open_for(view: View, spec: LoadSpec, remote: Remote) -> Any:
    """What the view reads: a backend (here or a server), or for the others the model, tokenizer or config here."""
    from lookinside.cli.backends import open_backend, open_server

    served = open_server(spec, remote)
    if served is not None:
        return served  # `llm serve` answers the view itself; another server what it can, refusing the rest in one line
    if view.needs == "model":
        return open_backend(spec, remote)
    if view.needs == "tokenizer":
        from lookinside.core.decoding.tokens import TokenizerOnly
        from lookinside.core.model.loading import load_tokenizer

        return TokenizerOnly(spec.model, load_tokenizer(spec))
    if view.needs == "config":
        from lookinside.core.inside.anatomy import on_meta

        return on_meta(spec)
    from lookinside.cli.loading import load_here

    return load_here(spec)


def answer_here(view: View, request: Any, spec: LoadSpec, remote: Remote) -> Any:
    """The record for `request`, from the model these options name."""
    return view.run(open_for(view, spec, remote), request)


def show_record(view: View, record: Any, as_json: bool, keep: Keep) -> None:
    """Print the record as the view draws it, or its JSON; keep SVG/HTML copies."""
    from lookinside.ui.console import show

    show(record, view.draw, view.json, as_json=as_json, keep=keep)


def request_parameters(view: View) -> list[inspect.Parameter]:
    """The command's own parameters: the request's fields as an argument and options, then --json."""
    hints = typing.get_type_hints(view.request)
    parameters = []
    for f in dataclasses.fields(view.request):
        if "argument" in f.metadata:
            annotation: Any = Annotated[Optional[str], typer.Argument(
                metavar=f.metadata["argument"], help=f.metadata["help"], show_default=False, callback=text_argument)]
            parameters.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                                annotation=annotation))
        elif "flags" in f.metadata:
            flag = typer.Option(*f.metadata["flags"], help=f.metadata["help"], show_default=f.default is not None)
            parameters.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default,
                                                annotation=Annotated[hints[f.name], flag]))
    parameters.append(inspect.Parameter("json", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False,
                                        annotation=JsonOpt))
    return parameters


def command_for(view: View) -> Callable[..., None]:
    """The Typer command for `view`."""
    names = [f.name for f in dataclasses.fields(view.request) if f.metadata]

    def command(*, spec: LoadSpec, keep: Keep, remote: Remote, json: bool = False, **given: Any) -> None:
        request = view.request(**{name: given[name] for name in names})
        show_record(view, answer_here(view, request, spec, remote), json, keep)

    command.__name__ = view.name.replace("-", "_")
    command.__doc__ = view.help
    own = request_parameters(view)
    command.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        *own, *(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a)
                for n, a in (("spec", LoadSpec), ("keep", Keep), ("remote", Remote)))])
    decorated = keep_options(remote_options(model_options(command)))
    return file_option(view.text)(decorated) if view.text else decorated
