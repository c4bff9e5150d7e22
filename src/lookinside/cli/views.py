"""A command for every view in lookinside.views: its argument and options come from the request's knobs.

`command_for(view)` gives a Typer command whose argument is the request's text field (also
`-` or `--file PATH`), with one option per other knob (core/request.py's `knobs`: flags, help
and defaults from the request's fields, the sampling flags from `FIELDS`), the model, remote
and --svg/--html options, and --json. Its body builds the request (checked before anything
loads), opens what the view needs (`open_for`), answers it and shows the record. What a
command has beyond its request (attention's --png) is an `Extra`, declared once beside it.
No torch at import.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

import typer

from lookinside.cli.backends import open_backend, open_server
from lookinside.cli.inputs import text_argument
from lookinside.cli.loading import load_here
from lookinside.cli.options import (
    SAMPLING_PANEL,
    JsonOpt,
    Keep,
    Remote,
    file_option,
    keep_options,
    model_options,
    remote_options,
)
from lookinside.core.decoding.tokens import TokenizerOnly
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import Knob, build, knobs
from lookinside.views import View


@dataclass(frozen=True)
class Extra:
    """An option a view's command has beyond its request: checked before anything loads, used on the record."""

    parameter: inspect.Parameter
    check: Callable[[Any], None]  # (the option's value) before loading
    use: Callable[[Any, Any], None]  # (record, value) once the record is there


def open_for(view: View, spec: LoadSpec, remote: Remote, request: Any) -> Any:
    """What the view reads: a backend (here or a server), or for the others the model, tokenizer or config here."""
    served = open_server(spec, remote)
    if served is not None:
        return served  # `llm serve` answers the view itself; another server what it can, refusing the rest in one line
    if view.needs == "model":
        return open_backend(spec, remote)
    if view.needs == "tokenizer":
        from lookinside.core.model.loading import load_tokenizer  # deferred: torch

        return TokenizerOnly(spec.model, load_tokenizer(spec))
    if view.needs == "config":
        from lookinside.core.inside.anatomy import on_meta  # deferred: torch and transformers, for the meta device

        return on_meta(spec)

    if view.prepare is not None:  # only when nothing else answers: it reads the config, and may import torch
        spec, note = view.prepare(spec, request)
        if note:
            from lookinside.ui.console import stderr_console  # deferred: Rich: not for `llm --help`

            stderr_console().print(f"note: {note}", style="dim", markup=False)
    return load_here(spec)


def show_record(view: View, record: Any, as_json: bool, keep: Keep) -> None:
    """Print the record as the view draws it, or its JSON; keep SVG/HTML copies."""
    from lookinside.ui.console import show  # deferred: Rich: not for `llm --help`

    show(record, view.draw, as_json=as_json, keep=keep)


def _cli_type(knob: Knob) -> Any:
    """The type Typer reads for `knob`: its own, a Literal as str, optional when it may be left out."""
    kind = knob.cli or knob.kind
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (Union, types.UnionType) and len(args) == 1:
        kind = args[0]
    if typing.get_origin(kind) is Literal:
        kind = str
    return kind if isinstance(knob.default, (bool, int, float, str)) else Optional[kind]


def _parameter(knob: Knob) -> inspect.Parameter:
    scalar = isinstance(knob.default, (bool, int, float, str))
    if knob.argument:
        info: Any = typer.Argument(metavar=knob.argument, help=knob.help, show_default=False, callback=text_argument)
    else:
        info = typer.Option(*knob.flags, help=knob.help, metavar=knob.metavar, show_default=scalar,
                            rich_help_panel=SAMPLING_PANEL if knob.sampling else None)
    return inspect.Parameter(knob.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=knob.default if scalar else None,
                             annotation=Annotated[_cli_type(knob), info])


# Every other view takes --no-server (from the remote options); one that reads only a config takes it too, as a
# no-op, so the flag a user adds to every command is never Click's "No such option" here.
NoServerHereOpt = Annotated[bool, typer.Option("--no-server", help="Run here: this view always does (it reads only the "
                                                                   "model's config, never a server).")]


def command_for(view: View, extras: Sequence[Extra] = ()) -> Callable[..., None]:
    """The Typer command for `view`, with `extras` beside its request's knobs."""
    asked = [k for k in knobs(view.request) if k.spec is None]
    from_spec = [k for k in knobs(view.request) if k.spec is not None]
    remote_too = view.needs != "config"  # a config is read here, never asked of a server

    def command(*, spec: LoadSpec, keep: Keep, remote: Remote = Remote(), json: bool = False, **given: Any) -> None:
        given.pop("no_server", None)  # a config view never asks a server: the flag changes nothing
        own = {e.parameter.name: given.pop(e.parameter.name) for e in extras}
        for extra in extras:
            extra.check(own[extra.parameter.name])  # before loading: a missing library should not cost a load
        request = build(view.request, {**given, **{k.name: getattr(spec, k.spec) for k in from_spec}})  # type: ignore[arg-type]
        record = view.run(open_for(view, spec, remote, request), request)
        for extra in extras:
            extra.use(record, own[extra.parameter.name])
        show_record(view, record, json, keep)

    command.__name__ = view.name.replace("-", "_")
    command.__doc__ = view.help
    context = [("spec", LoadSpec), ("keep", Keep), *([("remote", Remote)] if remote_too else [])]
    command.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        *(_parameter(k) for k in asked), *(e.parameter for e in extras),
        inspect.Parameter("json", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False, annotation=JsonOpt),
        *([] if remote_too else [inspect.Parameter("no_server", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False,
                                                   annotation=NoServerHereOpt)]),
        *(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a) for n, a in context)])
    decorated = model_options(command)
    decorated = keep_options(remote_options(decorated) if remote_too else decorated)
    return file_option(view.text)(decorated) if view.text else decorated
