"""The Python API: `import lookinside as li` is light, every view's `to_dict()` is the command's --json, and
`li.wrap` takes a model the user already loaded, as it is, refusing what cannot work."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lookinside as li
from lookinside.cli.app import app
from lookinside.core.errors import BadInput, NotACausalLM
from lookinside.tiny import ASSETS

from .wire_checks import TIMES, untimed

PROMPT = "The capital of France is"
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def cli_json(*args: str) -> dict:
    # One thread on both sides: the default follows the machine's idle cores, and another thread count sums
    # in another order, which a sample at temperature 1.5 can tell apart on a busy machine.
    result = runner.invoke(app, [*args, "--model", "tiny", "--device", "cpu", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def same(data: dict) -> dict:
    """A dict as JSON would carry it (tuples become lists, and so on)."""
    return json.loads(json.dumps(data))


def without(data: dict, *keys: str) -> dict:
    return {k: v for k, v in data.items() if k not in keys}


@pytest.fixture(scope="module")
def lm():
    return li.load("tiny", device="cpu", threads=1)


def test_import_lookinside_imports_no_torch():
    code = "import sys, lookinside as li; li.Result; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)  # a hang, not a slow box
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(("call", "command"), [
    (lambda lm: li.next_token(lm, PROMPT, top_k=5), ["next-token", PROMPT, "-k", "5"]),
    (lambda lm: li.compare(lm, PROMPT, seed=42, temperature=1.5, max_new_tokens=12),
     ["compare", PROMPT, "--seed", "42", "-t", "1.5", "-n", "12"]),
    (lambda lm: li.tokens(lm, "Héllo wörld 🙂"), ["tokens", "Héllo wörld 🙂"]),
    (lambda lm: li.forward(lm, PROMPT), ["forward", PROMPT]),
    (lambda lm: li.attention(lm, PROMPT, layer=1), ["attention", PROMPT, "--layer", "1"]),
    (lambda lm: li.lens(lm, PROMPT, top_k=2), ["lens", PROMPT, "-k", "2"]),
    (lambda lm: li.inspect(lm), ["inspect"]),
], ids=["next-token", "compare", "tokens", "forward", "attention", "lens", "inspect"])
def test_to_dict_is_the_commands_json(lm, call, command):
    ours = same(call(lm).to_dict())
    assert untimed(ours) == untimed(cli_json(*command))
    assert (ours != untimed(ours)) == (command[0] == "compare")  # only compare generates, and times its steps


def test_diff_is_the_commands_json(lm):
    other = li.load("tiny", device="cpu", dtype="bfloat16", threads=1)
    text = "The capital of France is Paris. The capital of Japan is Tokyo."
    ours = same(li.diff(lm, other, text, top_k=5).to_dict())
    assert ours == cli_json("diff", text, "--against-dtype", "bfloat16", "-k", "5")


def test_every_view_has_its_api_function():
    from lookinside.views import VIEWS

    assert all(callable(getattr(li, name.replace("-", "_"))) for name in VIEWS)


def test_generate_steps_then_the_whole_run_as_generate_json(lm):
    running = li.generate(lm, PROMPT, temperature=0.8, seed=3, max_new_tokens=10)
    first = next(iter(running))
    assert repr(running).startswith(f"Generating(tiny, {PROMPT!r}, 1 steps so far)")
    result = running.result()
    assert result.run.steps[0] is first and result.run.seed == 3 and result.prompt == PROMPT
    ours, theirs = same(result.to_dict()), cli_json("generate", PROMPT, "-t", "0.8", "--seed", "3", "-n", "10")
    assert untimed(ours) == untimed(theirs) and ours["run"]["steps"]
    assert set(ours["run"]) == set(theirs["run"]) >= set(TIMES[1:])
    assert all(str(i) in ours["pieces"] for step in ours["run"]["steps"] for i, _ in step["top"])


def test_bench_has_the_commands_json_fields(lm):
    result = li.bench(lm, new_tokens=4, warmup=0, repeat=1, reference=False)
    theirs = cli_json("bench", "-n", "4", "--warmup", "0", "--repeat", "1", "--no-reference", "--threads", "1")
    assert set(result.to_dict()) == set(theirs) and result.run("dynamic").new_tokens == 4


def test_bench_takes_the_commands_prompt_length_and_sweep(lm):
    result = li.bench(lm, prompt_tokens=7, sweep="2,4", warmup=0, repeat=1, cache=True, reference=False)
    assert [line["lengths"] for line in result.to_dict()["sweep"]] == [[2, 4]] * len(result.sweep)
    assert {run.prompt_tokens for run in result.all_runs} == {7} and len(result.all_runs) == 2
    with pytest.raises(BadInput, match="--sweep needs at least two lengths"):
        li.bench(lm, sweep="8")


def test_results_draw_in_a_terminal_and_in_jupyter(lm):
    from rich.console import Console

    result = li.next_token(lm, PROMPT, top_k=3)
    console = Console(record=True, width=100)
    console.print(result)
    assert "Paris" in console.export_text() and "Paris" in result._repr_html_()
    assert result.top[0].token == " Paris" and result.record.top is result.top  # fields read through


def test_docs_api_shows_the_cells_real_output(lm):
    """docs/api.md's cell and the table under it, as scripts/check_docs.py compares (last printed digit +-1)."""
    from rich.console import Console

    checker = importlib.util.spec_from_file_location("check_docs", ROOT / "scripts" / "check_docs.py")
    check_docs = importlib.util.module_from_spec(checker)
    sys.modules["check_docs"] = check_docs  # dataclasses look their module up there
    checker.loader.exec_module(check_docs)
    page = (ROOT / "docs" / "api.md").read_text()
    assert 'li.next_token(lm, "The capital of France is", top_k=5)' in page
    shown = page.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    console = Console(width=100, color_system=None, record=True, file=io.StringIO())
    console.print(li.next_token(lm, PROMPT, top_k=5))
    got = console.export_text().splitlines()
    assert len(shown) == len(got) and all(map(check_docs.same_line, shown, got)), "\n".join(got)


def test_results_save_as_svg_or_html_like_the_commands_flags(lm, tmp_path):
    result = li.next_token(lm, PROMPT, top_k=3)
    svg, page = result.save(tmp_path / "table.svg"), result.save(tmp_path / "table.html")
    assert svg.read_text().startswith("<svg") and "Paris" in svg.read_text()
    assert "<!DOCTYPE html>" in page.read_text() and "Paris" in page.read_text()
    with pytest.raises(BadInput, match="writes .svg or .html, not 'table.png'"):
        result.save(tmp_path / "table.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["table.html", "table.svg"]


def test_wrap_uses_the_users_model_as_it_is():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ASSETS)
    tokenizer = AutoTokenizer.from_pretrained(ASSETS)
    lm = li.wrap(model, tokenizer)
    assert lm.model is model and lm.tokenizer is tokenizer  # no copy, no reload
    assert li.next_token(lm, PROMPT).top[0].token == " Paris"
    before = lm.attn_implementation
    assert li.attention(lm, PROMPT).record.heads == model.config.num_attention_heads
    assert lm.attn_implementation == before  # switched to eager for the pass, then back


def test_wrap_refuses_a_model_without_an_lm_head_and_a_tokenizer_of_another_model():
    from transformers import AutoModel, AutoTokenizer

    from lookinside.core.model.loading import CONFIGS

    with pytest.raises(NotACausalLM, match="not a causal language model"):
        li.wrap(AutoModel.from_pretrained(ASSETS), AutoTokenizer.from_pretrained(ASSETS))
    with pytest.raises(NotACausalLM, match="needs a transformers model"):
        li.wrap("tiny", AutoTokenizer.from_pretrained(ASSETS))
    from transformers import AutoModelForCausalLM

    phi3 = AutoTokenizer.from_pretrained(CONFIGS / "phi-3-mini-4k-instruct")
    with pytest.raises(BadInput, match="32,0.. tokens but the model's embedding only 1,024 rows"):
        li.wrap(AutoModelForCausalLM.from_pretrained(ASSETS), phi3)


def test_wrap_refuses_an_encoder_decoder_and_a_tokenizer_far_smaller_than_the_embedding():
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM, T5Config, T5ForConditionalGeneration

    tiny_tokenizer = AutoTokenizer.from_pretrained(ASSETS)  # 980 tokens
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=1024, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2))
    with pytest.raises(NotACausalLM, match="T5ForConditionalGeneration is an encoder-decoder model"):
        li.wrap(t5, tiny_tokenizer)
    phi3_sized = Phi3ForCausalLM(Phi3Config(vocab_size=32064, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=2, pad_token_id=0))
    with pytest.raises(BadInput, match="980 tokens but the model's embedding 32,064 rows"):
        li.wrap(phi3_sized, tiny_tokenizer)
    with pytest.raises(BadInput, match="needs a transformers tokenizer, not str"):
        li.wrap(phi3_sized, "tiny")


def test_bad_values_raise_the_commands_message(lm):
    with pytest.raises(BadInput, match="the prompt is empty"):
        li.next_token(lm, "  ")
    with pytest.raises(BadInput, match="top_p must be in"):
        li.compare(lm, PROMPT, top_p=0)
    with pytest.raises(AttributeError):
        li.no_such_view  # noqa: B018
