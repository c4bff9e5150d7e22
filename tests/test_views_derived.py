"""Every view's command and `li.` function are derived from its request: each knob (core/request.py's `knobs`)
is an option or the argument of `llm NAME` and a parameter of `li.NAME`, with the same default."""

from __future__ import annotations

import inspect

import pytest
import typer.main

import lookinside as li
from lookinside.cli.app import app
from lookinside.core.errors import BadInput
from lookinside.core.request import REQUIRED, build, knobs
from lookinside.views import VIEWS


def _command(name: str):
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_each_knob_is_the_commands_option_and_the_functions_keyword(name):
    view = VIEWS[name]
    params = {p.name: p for p in _command(name).params}
    signature = inspect.signature(getattr(li, name.replace("-", "_")))
    for knob in knobs(view.request):
        if knob.spec is None:
            assert set(knob.flags) <= set(params[knob.name].opts), (name, knob.name)
        assert knob.name in signature.parameters, (name, knob.name)
        given = signature.parameters[knob.name].default
        assert given is inspect.Parameter.empty if knob.default is REQUIRED else given == knob.default, knob.name


def test_a_requests_groups_take_its_own_defaults_and_the_given_values():
    compare = build(VIEWS["compare"].request, {"prompt": "hi", "temperature": 0.5, "stop": ["."]})
    assert compare.settings.max_new_tokens == 40 and compare.settings.stop_strings == (".",)
    assert compare.params.temperature == 0.5 and compare.params.top_p == 1.0
    steer = build(VIEWS["steer"].request, {"prompt": "hi", "add": " x", "rows": 3})
    assert steer.params.temperature == 0.0 and steer.rows == 3  # greedy unless told; the table rows settable


def test_a_required_option_left_out_is_its_own_line():
    with pytest.raises(BadInput, match="give both prompts"):
        build(VIEWS["patch"].request, {"clean": "a"})
    with pytest.raises(BadInput, match="give the direction to add"):
        build(VIEWS["steer"].request, {"prompt": "hi"})


def test_inspect_takes_a_loaded_model_or_a_models_name_and_quantize_as_a_keyword(tiny):
    by_name = li.inspect("tiny", quantize="int8").to_dict()
    assert by_name["card"]["layers"] == li.inspect(tiny).to_dict()["card"]["layers"] and by_name["quantized"]


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_every_view_takes_no_server(name):
    # the flag a user adds to every command is never Click's "No such option" (issue 32: `llm inspect --no-server`)
    assert any("--no-server" in p.opts for p in _command(name).params), name


def test_inspect_with_no_server_reads_the_config_here():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["inspect", "--model", "tiny", "--no-server", "--json"])
    assert result.exit_code == 0, result.output
    assert '"Phi3ForCausalLM"' in result.output or "Phi3ForCausalLM" in result.output
