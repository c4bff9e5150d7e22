"""The JSON is the record: every `--json` is core/wire.py's `to_wire` of the command's record, and reads back.

For each view the command's `--json` (run here, one thread) must equal `to_wire` of the record that
`li.<view>` returns for the same arguments; `from_wire(to_wire(record))` must give the record back;
the worked-out values a record names in `DERIVED` must be its properties; and no hand-written
`*_json` reshaper may come back beside the codec.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lookinside as li
from lookinside.cli.app import app
from lookinside.core import records
from lookinside.core.bench import report as bench_report
from lookinside.core.inside.interventions import records as intervention_records
from lookinside.core.model.quantize import Estimate
from lookinside.core.wire import derived, from_wire, to_wire
from lookinside.views import VIEWS

from .wire_checks import untimed

PROMPT = "The capital of France is"
SRC = Path(li.__file__).resolve().parent
runner = CliRunner()
# each view: the command's arguments, and the same asked of its li. function
RUNS = {
    "next-token": (["next-token", PROMPT, "-k", "4", "-t", "0.7"], lambda lm: li.next_token(lm, PROMPT, top_k=4,
                                                                                           temperature=0.7)),
    "compare": (["compare", PROMPT, "--seed", "3", "-n", "6", "-s", "2", "-t", "1.2"],
                lambda lm: li.compare(lm, PROMPT, seed=3, max_new_tokens=6, samples=2, temperature=1.2)),
    "tokens": (["tokens", "a 🙂", "--chat"], lambda lm: li.tokens(lm, "a 🙂", chat=True)),
    "inspect": (["inspect"], lambda lm: li.inspect(lm)),
    "forward": (["forward", PROMPT], lambda lm: li.forward(lm, PROMPT)),
    "attention": (["attention", PROMPT, "--layer", "1"], lambda lm: li.attention(lm, PROMPT, layer=1)),
    "lens": (["lens", PROMPT, "-k", "2", "--all-positions"], lambda lm: li.lens(lm, PROMPT, top_k=2,
                                                                                  all_positions=True)),
    "ablate": (["ablate", PROMPT, "--head", "1.0"], lambda lm: li.ablate(lm, PROMPT, heads=["1.0"])),
    "patch": (["patch", "--clean", PROMPT, "--corrupt", "The capital of Japan is"],
              lambda lm: li.patch(lm, PROMPT, "The capital of Japan is")),
    "steer": (["steer", PROMPT, "--add", " Japan", "-n", "4"], lambda lm: li.steer(lm, PROMPT, add=" Japan",
                                                                                    max_new_tokens=4)),
}


@pytest.fixture(scope="module")
def lm():
    return li.load("tiny", device="cpu", threads=1)


def cli_json(*args: str, here: tuple[str, ...] = ("--no-server",)) -> dict:
    result = runner.invoke(app, [*args, "--model", "tiny", "--device", "cpu", "--threads", "1", *here, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def as_json(data: object) -> object:
    """What a JSON parser reads back from `data`."""
    return json.loads(json.dumps(data, allow_nan=False))


def test_every_view_is_tried():
    assert set(RUNS) == set(VIEWS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_commands_json_is_to_wire_of_the_record(lm, name):
    args, call = RUNS[name]
    result = call(lm)
    assert type(result.record) is VIEWS[name].record
    wire = as_json(to_wire(result.record))
    assert untimed(cli_json(*args)) == untimed(wire) and result.to_dict() == to_wire(result.record)
    fields = {f.name for f in dataclasses.fields(result.record)}
    assert fields | set(derived(type(result.record))) == set(wire) - {"nulls"}  # the record, nothing beside it


@pytest.mark.parametrize("name", sorted(RUNS))
def test_from_wire_gives_the_record_back(lm, name):
    record = RUNS[name][1](lm).record
    wire = as_json(to_wire(record))
    back = from_wire(VIEWS[name].record, wire)
    assert back == record and as_json(to_wire(back)) == wire


def test_generate_bench_and_diff_print_their_records(lm):
    done = li.generate(lm, PROMPT, temperature=0, max_new_tokens=5).result()
    assert untimed(cli_json("generate", PROMPT, "-t", "0", "-n", "5")) == untimed(as_json(to_wire(done.record)))
    assert from_wire(records.Completion, as_json(to_wire(done.record))) == done.record
    bench = li.bench(lm, new_tokens=3, warmup=0, repeat=1, reference=False).record
    theirs = cli_json("bench", "-n", "3", "--warmup", "0", "--repeat", "1", "--no-reference")
    assert set(theirs) == set(to_wire(bench)) and [r["cache"] for r in theirs["runs"]] == ["dynamic", "none"]
    assert from_wire(bench_report.BenchReport, as_json(to_wire(bench))) == bench
    text = "The capital of France is Paris. The capital of Japan is Tokyo."
    diff = li.diff(lm, li.load("tiny", device="cpu", dtype="bfloat16", threads=1), text, top_k=3).record
    assert cli_json("diff", text, "--against-dtype", "bfloat16", "-k", "3", here=()) == as_json(to_wire(diff))
    assert from_wire(records.Diff, as_json(to_wire(diff))) == diff


def test_a_derived_value_is_written_and_worked_out_again_not_read():
    run = records.Generation([1, 2], [records.Step(0, 7, " a", 0.5, 1, ((7, 0.5),), 0.1, "eos")], seed=None)
    wire = to_wire(run)
    assert wire["text"] == " a" and wire["perplexity"] == pytest.approx(2.0) and wire["finish"] == "eos"
    assert from_wire(records.Generation, {**wire, "text": "not read"}).text == " a"


def test_a_non_finite_derived_value_is_null_and_said_in_nulls():
    never = records.Step(0, 7, " a", 0.0, 9, (), 0.1)  # probability 0: the log-probability is -inf
    wire = to_wire(records.Generation([1], [never]))
    assert wire["steps"][0]["logprob"] is None and wire["nulls"]["steps[0].logprob"] == "-Infinity"
    assert wire["perplexity"] is None and from_wire(records.Generation, as_json(wire)).steps == [never]


def test_every_derived_name_is_a_property_of_its_record():
    kinds = [k for module in (records, intervention_records, bench_report) for k in vars(module).values()
             if isinstance(k, type) and dataclasses.is_dataclass(k)] + [Estimate]
    declared = [(kind, name) for kind in kinds for name in derived(kind)]
    assert len(declared) > 30
    for kind, name in declared:
        assert isinstance(getattr(kind, name, None), property), f"{kind.__name__}.DERIVED names {name!r}"
        assert name not in {f.name for f in dataclasses.fields(kind)}


def test_no_hand_written_json_reshaper_is_left():
    allowed = {"to_json", "from_json", "read_json", "print_json"}  # settings codecs, the server's body reader, stdout
    found = [f"{path.relative_to(SRC)}:{node.name}" for path in SRC.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.endswith("_json")
             and node.name not in allowed]
    assert found == []


def test_a_transcript_is_the_conversation_as_to_wire_writes_it(tmp_path):
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.transcripts import read_transcript, write_transcript

    conversation = Conversation(system="Be brief.")
    conversation.add("user", "Hi")
    conversation.add("assistant", "Hello.", tokens=[["Hello", 0.5, 1, [], "Hello"], [".", 0.25, 3, [], "."]])
    saved = json.loads(write_transcript(conversation, tmp_path / "t.json", "tiny").read_text())
    assert saved == {"version": 2, "model": "tiny", **as_json(to_wire(conversation))}
    back, model = read_transcript(tmp_path / "t.json")
    assert model == "tiny" and back.messages == conversation.messages and back.system == "Be brief."


def test_vllms_minus_9999_lives_in_the_openai_routes_alone():
    holders = sorted(str(path.relative_to(SRC)) for path in SRC.rglob("*.py") if "9999" in path.read_text())
    assert holders == ["serve/openai_api.py"]
