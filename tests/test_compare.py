"""`llm compare`: JSON fields and seeds, the panels wide and narrow, and bad values refused before loading."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.decoding.compare import compare
from lookinside.core.records import first_difference
from lookinside.core.request import CompareRequest, GenerationSettings
from lookinside.core.sampling_params import SamplingParams
from lookinside.ui.compare import compare_view

from .wire_checks import untimed

ANSI = re.compile(r"\x1b\[")
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["compare", *args])


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2
    assert [p.seed for p in CompareRequest("x", SamplingParams(seed=42), samples=3).sample_params()] == [42, 43, 44]


def test_json_has_greedy_and_seeded_samples():
    result = run("The capital of France is", "--model", "tiny", "--json", "--seed", "42", "-t", "1.5", "-n", "12")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    greedy, samples = data["greedy"], data["samples"]
    assert greedy["text"].startswith(" Paris") and greedy["seed"] is None
    assert len(samples) == 3 and [s["seed"] for s in samples] == data["seeds"] == [42, 43, 44]
    for entry in [greedy, *samples]:
        logprobs = [step["logprob"] for step in entry["steps"]]
        assert len(entry["token_ids"]) == len(logprobs) >= 1 and all(lp <= 0 for lp in logprobs)
        assert entry["token_ids"] == [step["token_id"] for step in entry["steps"]]
        assert entry["mean_logprob"] == pytest.approx(sum(logprobs) / len(logprobs))
        assert entry["text"] == "".join(step["text"] for step in entry["steps"])
    assert len(data["departs_at"]) == 3
    for sample, departs in zip(samples, data["departs_at"]):
        assert departs is None or sample["token_ids"][:departs] == greedy["token_ids"][:departs]
        assert departs is None or sample["token_ids"][departs] != greedy["token_ids"][departs]
    assert data["params"]["temperature"] == 1.5 and data["params"]["top_k"] == 0
    assert data["params"]["seed"] == 42 and data["settings"]["max_new_tokens"] == 12


def test_the_same_seed_gives_the_same_json_and_an_unset_seed_is_shown():
    # one thread: the default follows the idle cores, and another count sums in another order (1e-6 apart)
    args = ("Write an email to Sarah", "--model", "tiny", "--threads", "1", "--json", "-n", "16", "-s", "2", "-t", "2")
    first = json.loads(run(*args, "--seed", "7").stdout)
    assert untimed(json.loads(run(*args, "--seed", "7").stdout)["samples"]) == untimed(first["samples"])
    free = json.loads(run(*args).stdout)
    base = free["params"]["seed"]
    assert isinstance(base, int) and [s["seed"] for s in free["samples"]] == [base, base + 1]
    again = json.loads(run(*args, "--seed", str(base)).stdout)
    assert [s["token_ids"] for s in again["samples"]] == [s["token_ids"] for s in free["samples"]]


def test_temperature_zero_samples_are_the_greedy_run():
    data = json.loads(run("Write an email to Sarah", "--model", "tiny", "--json", "-t", "0", "-n", "8",
                          "--seed", "9", "-s", "2").stdout)
    assert data["seeds"] == [9, 10] and [s["seed"] for s in data["samples"]] == [None, None]  # greedy: no sampler
    assert all(s["token_ids"] == data["greedy"]["token_ids"] for s in data["samples"])
    assert data["departs_at"] == [None, None]


def test_view_shows_runs_seeds_stats_and_settings():
    result = run("Write an email to Sarah", "--model", "tiny", "--chat", "--seed", "3", "-n", "20", "-t", "2")
    assert result.exit_code == 0, result.output
    out = result.output
    assert not ANSI.search(out)  # not a terminal: plain text
    assert "greedy" in out and "sample 1" in out and "sample 3" in out
    assert "seed 3" in out and "seed 5" in out and "seeds 3..5" in out
    assert "perplexity" in out and "log-prob" in out and "temperature=2" in out
    assert "departs from greedy at token" in out or "same as greedy" in out
    assert "Sarah" in out and "chat template" in out


def _render(result, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(compare_view(result))
    return console.file.getvalue().splitlines()


def test_panels_sit_side_by_side_when_wide_and_stack_when_narrow(tiny):
    result = compare(tiny, CompareRequest("The capital of France is", SamplingParams(temperature=2.0, seed=1),
                                          GenerationSettings(max_new_tokens=8), samples=2))
    wide = _render(result, 140)
    assert any("greedy" in line and "sample 1" in line and "sample 2" in line for line in wide)
    narrow = _render(result, 50)
    titles = [i for i, line in enumerate(narrow) if re.search(r"─ (greedy|sample \d) ─", line)]
    assert len(titles) == 3 and all(line.count("╭") <= 1 for line in narrow)
    assert max(len(line) for line in narrow) <= 50


def test_tokens_are_coloured_by_probability_and_the_departure_is_marked(tiny):
    from lookinside.ui.compare import run_text
    from lookinside.ui.text import prob_style

    result = compare(tiny, CompareRequest("The capital of France is", SamplingParams(temperature=1.5, seed=42),
                                          GenerationSettings(max_new_tokens=10), samples=3))
    text = run_text(result.greedy, None, "The capital of France is")
    paris = next(span for span in text.spans if text.plain[span.start:span.end] == " Paris")
    assert paris.style == prob_style(result.greedy.steps[0].prob) == "green"
    assert text.plain.endswith("[end]")
    departed = [run for run in result.samples if result.departs(run) is not None]
    assert departed  # with these seeds at least one sample leaves the greedy path (the tiny model at T=1.5)
    run = departed[0]
    marked = [span for span in run_text(run, result.departs(run)).spans if "underline" in str(span.style)]
    assert len(marked) == 1 and str(marked[0].style).startswith(prob_style(run.steps[result.departs(run)].prob))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-k", "-2"], "top_k must be >= 0"),
        (["--min-p", "2"], "min_p must be in [0, 1]"),
        (["--repetition-penalty", "0"], "repetition_penalty must be > 0"),
        (["--seed", "-5"], "seed must be in [0, 2**63)"),
        (["--samples", "0"], "--samples must be between 1 and 16"),
        (["--max-new-tokens", "0"], "max_new_tokens must be a whole number >= 1"),
    ],
)
def test_bad_values_are_one_line_and_refused_before_loading(args, message):
    result = run("hello", *args, "--model", "./no/such/model")  # loading would fail differently
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_empty_prompt_and_context_overflow_are_one_line():
    assert "prompt is empty" in run("   ", "--model", "tiny").stderr
    result = run("word " * 600, "--model", "tiny")
    # fail() prints through a Rich console, which wraps a long message at 80 columns: compare the words
    assert result.exit_code != 0 and "more than the model's context of 512 tokens" in " ".join(result.stderr.split())


def test_help_lists_the_sampling_options():
    out = run("--help").output
    for option in ("--samples", "--temperature", "--top-k", "--top-p", "--min-p", "--repetition-penalty", "--seed",
                   "--max-new-tokens", "--chat", "--json", "--model", "--device", "--dtype"):
        assert option in out
