"""`llm generate`: the completion streamed as text, one JSON object, or JSON lines; compare's --stop and --ignore-eos."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app

runner = CliRunner()


def gen(*args: str):
    return runner.invoke(app, ["generate", *args, "--model", "tiny"])


def test_a_greedy_completion_is_plain_text():
    result = gen("The capital of France is", "-t", "0")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(" Paris")


def test_json_has_the_text_ids_logprobs_finish_seed_and_timing():
    data = json.loads(gen("The capital of Japan is", "-t", "0.7", "--seed", "5", "--json").output)
    run = data["run"]
    assert run["text"].startswith(" Tokyo") and run["finish"] == "eos" and run["seed"] == 5
    assert run["token_ids"] == [s["token_id"] for s in run["steps"]] and run["prompt_ids"][0] == 1
    step = run["steps"][0]
    assert data["pieces"][str(step["token_id"])] == " Tokyo" and step["rank"] == 1 and step["logprob"] < 0
    assert len(step["top"]) == 5 and all(str(i) in data["pieces"] for i, _ in step["top"])
    assert run["ttft_s"] > 0 and data["unavailable"] == {} and data["model"] == "tiny"
    again = json.loads(gen("The capital of Japan is", "-t", "0.7", "--seed", "5", "--json").output)
    assert again["run"]["token_ids"] == run["token_ids"]  # the seed repeats the run


def test_jsonl_is_one_line_per_token_then_the_whole_record():
    lines = [json.loads(line) for line in gen("The capital of Japan is", "-t", "0", "--jsonl").output.splitlines()]
    assert [line["index"] for line in lines[:-1]] == list(range(len(lines) - 1))
    assert lines[-1]["run"]["steps"] == lines[:-1]  # each line is the step as the record holds it
    assert lines[-1]["run"]["token_ids"] == [line["token_id"] for line in lines[:-1]]


def test_stop_strings_cut_the_text_and_ignore_eos_runs_to_the_limit():
    data = json.loads(gen("The capital of France is", "-t", "0", "--stop", ".", "--json").output)
    assert data["run"]["text"] == " Paris" and data["run"]["finish"] == "stop"
    data = json.loads(gen("The capital of France is", "-t", "0", "--ignore-eos", "-n", "9", "--json").output)
    assert len(data["run"]["token_ids"]) == 9 and data["run"]["finish"] == "length"


def test_compare_takes_stop_and_ignore_eos():
    result = runner.invoke(app, ["compare", "The capital of France is", "--model", "tiny", "--seed", "1", "-s", "1",
                                 "--ignore-eos", "-n", "6", "--json"])
    data = json.loads(result.output)
    assert all(len(run["token_ids"]) == 6 for run in [data["greedy"], *data["samples"]])
    result = runner.invoke(app, ["compare", "The capital of France is", "--model", "tiny", "--stop", ".", "--json"])
    assert json.loads(result.output)["greedy"]["text"] == " Paris"


@pytest.mark.slow
def test_the_prompt_from_stdin_and_the_chat_template():
    out = subprocess.run([sys.executable, "-m", "lookinside", "generate", "-", "--chat", "-t", "0", "--model", "tiny"],
                         input="What is the capital of Japan?", capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "Tokyo" in out.stdout
    assert out.stderr == ""  # stats go to stderr only when a person watches it


def test_bad_input_is_one_line(tmp_path):
    for args, message in [([], "give the text"), (["hi", "--json", "--jsonl"], "choose one"),
                          (["hi", "-t", "-1"], "temperature must be >= 0"), (["", "-t", "0"], "the prompt is empty")]:
        result = gen(*args)
        assert result.exit_code != 0 and message in result.output, (args, result.output)
