"""`llm ablate`, `llm patch`, `llm steer`: checked against a from-scratch forward pass (tests/reference_forward.py).

The reference computes Phi-3 and Llama blocks from the weights in float64, with each intervention written
into the math (no hooks), on the tiny model and on a small random Llama-shaped model.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import lookinside as li
from lookinside.cli.app import app
from lookinside.core.errors import BadInput
from lookinside.core.inside.interventions import ablate as core_ablate
from lookinside.core.inside.interventions import hooks
from lookinside.core.inside.interventions import patch as core_patch
from lookinside.core.inside.interventions import steer as core_steer
from lookinside.core.inside.interventions.requests import AblateRequest, PatchRequest, SteerRequest, parse_head
from lookinside.core.sampling_params import SamplingParams

from . import reference_forward as ref
from .conftest import random_model_dir, small_config

runner = CliRunner()
CLEAN, CORRUPT = "The capital of France is", "The capital of Japan is"
TOL = 2e-5  # float32 model against the float64 reference, on probabilities


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A small random Llama-shaped model (GQA: 4 heads, 2 key/value heads; separate q, k, v and gate, up)."""
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    path = random_model_dir(tmp_path_factory.mktemp("llama"), small_config("llama"))
    return load(LoadSpec(model=str(path), device="cpu"))


@pytest.fixture(params=["tiny", "llama"])
def lm(request, tiny, llama):
    return tiny if request.param == "tiny" else llama


def ids(lm, text: str) -> list[int]:
    return list(lm.tokenizer(text).input_ids)


def model_logits(lm, text: str = CLEAN) -> torch.Tensor:
    return hooks.last_logits(lm, ids(lm, text))[0]


def no_hooks_left(model: torch.nn.Module) -> bool:
    """No hook of ours on any module (transformers 5 keeps hooks of its own once hidden states were asked for)."""
    def ours(hook: object) -> bool:
        return (getattr(hook, "__module__", None) or getattr(getattr(hook, "func", None), "__module__", "") or ""
                ).startswith("lookinside")

    return not any(ours(h) for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))


# ---- the reference itself


def test_reference_is_the_model(lm):
    # without edits, the from-scratch pass gives the model's own distribution: the reference is right
    got = torch.softmax(model_logits(lm), -1).double()
    assert torch.allclose(ref.probs(ref.forward(lm.model, ids(lm, CLEAN))), got, atol=TOL)


# ---- ablation


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_head_ablation_matches_reference(lm, mode):
    result = core_ablate.ablate(lm, AblateRequest(CLEAN, heads=((0, 1), (1, 3), (1, 0)), mode=mode, top_k=5))
    expected = ref.probs(ref.forward(lm.model, ids(lm, CLEAN), ref.Edits(heads={0: [1], 1: [3, 0]}, mode=mode)))
    assert result.ablated == ("head 0.1", "head 1.0", "head 1.3")
    for candidate in result.shift.after:
        assert candidate.prob == pytest.approx(float(expected[candidate.id]), abs=TOL)
    assert result.shift.top_after_prob == pytest.approx(float(expected[result.top.id]), abs=TOL)
    assert result.shift.after[0].id == int(expected.argmax())


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("part", ["attn", "mlp", "block"])
def test_part_ablation_matches_reference(lm, part, mode):
    result = core_ablate.ablate(lm, AblateRequest(CLEAN, layer=-1, part=part, mode=mode, top_k=3))
    last = lm.config.num_hidden_layers - 1
    expected = ref.probs(ref.forward(lm.model, ids(lm, CLEAN), ref.Edits(parts={last: part}, mode=mode)))
    assert result.ablated == (f"layer {last} {part}",)
    assert result.shift.top_after_prob == pytest.approx(float(expected[result.top.id]), abs=TOL)
    before = ref.probs(ref.forward(lm.model, ids(lm, CLEAN)))
    kl = float((before * (before.log() - expected.log())).sum())
    assert result.shift.kl == pytest.approx(kl, abs=1e-4)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_head_sweep_matches_reference_and_the_per_cell_loop(lm, mode):
    batched = core_ablate.ablate(lm, AblateRequest(CLEAN, sweep="heads", mode=mode))
    looped = core_ablate.ablate(lm, AblateRequest(CLEAN, sweep="heads", mode=mode), batched=False)
    grid = batched.grid
    assert len(grid.rows) == lm.config.num_hidden_layers and len(grid.columns) == lm.config.num_attention_heads
    for layer, row in enumerate(grid.values):
        for head, value in enumerate(row):
            expected = ref.probs(ref.forward(lm.model, ids(lm, CLEAN), ref.Edits(heads={layer: [head]}, mode=mode)))
            assert value == pytest.approx(float(expected[batched.top.id]), abs=TOL)
            assert value == pytest.approx(looped.grid.values[layer][head], abs=1e-5)


def test_layer_sweep_matches_reference(lm):
    result = core_ablate.ablate(lm, AblateRequest(CLEAN, sweep="layers", mode="mean"))
    assert result.grid.columns == ("attn", "mlp", "block")
    for layer, row in enumerate(result.grid.values):
        for part, value in zip(result.grid.columns, row):
            expected = ref.probs(ref.forward(lm.model, ids(lm, CLEAN), ref.Edits(parts={layer: part}, mode="mean")))
            assert value == pytest.approx(float(expected[result.top.id]), abs=TOL)


def test_tiny_needs_block_0s_attention_for_paris(tiny):
    # real behaviour: the tiny model moves " France" to the last position in block 0's attention
    result = core_ablate.ablate(tiny, AblateRequest(CLEAN, layer=0, part="attn"))
    assert result.top.token == " Paris" and result.top.prob > 0.99
    assert result.shift.top_after_prob < 0.01 and result.shift.top_after_rank > 1
    assert result.shift.kl is not None and result.shift.kl > 1


# ---- patching


@pytest.mark.parametrize("part", ["resid", "attn", "mlp"])
def test_patch_matches_reference(lm, part):
    result = core_patch.patch(lm, PatchRequest(CLEAN, CORRUPT, part=part))
    clean = ref.forward(lm.model, ids(lm, CLEAN))
    corrupt_ids = ids(lm, CORRUPT)
    target = result.target.id
    assert result.clean_prob == pytest.approx(float(ref.probs(clean)[target]), abs=TOL)
    assert result.corrupt_prob == pytest.approx(float(ref.probs(ref.forward(lm.model, corrupt_ids))[target]), abs=TOL)
    source = {"resid": clean.stream, "attn": clean.attn, "mlp": clean.mlp}[part]
    assert len(result.prob) == len(source) and all(len(row) == len(corrupt_ids) for row in result.prob)
    for layer, row in enumerate(result.prob):
        for position, value in enumerate(row):
            cell = {(layer, position): source[layer][position]}
            edits = ref.Edits(**{{"resid": "stream_patch", "attn": "attn_patch", "mlp": "mlp_patch"}[part]: cell})
            assert value == pytest.approx(float(ref.probs(ref.forward(lm.model, corrupt_ids, edits))[target]), abs=TOL)


def test_patch_last_layer_last_position_is_the_clean_probability(lm):
    result = core_patch.patch(lm, PatchRequest(CLEAN, CORRUPT))
    assert result.prob[-1][-1] == pytest.approx(result.clean_prob, abs=1e-6)
    assert all(p == pytest.approx(result.corrupt_prob, abs=1e-6) for p in result.prob[-1][:-1])  # too late to matter


def test_patch_tiny_finds_france(tiny):
    result = core_patch.patch(tiny, PatchRequest(CLEAN, CORRUPT))
    assert result.target.token == " Paris" and result.corrupt_prob < 0.01 and result.clean_prob > 0.99
    japan = next(t.index for t in result.tokens if t.text == " Japan")
    assert result.prob[0][japan] > 0.9  # the embeddings of " France" carry the answer


def test_patch_batched_equals_the_per_cell_loop(tiny):
    request = PatchRequest(CLEAN, CORRUPT)
    batched, looped = core_patch.patch(tiny, request), core_patch.patch(tiny, request, batched=False)
    assert torch.allclose(torch.tensor(batched.prob), torch.tensor(looped.prob), atol=1e-6)


def test_patch_with_a_named_target(tiny):
    result = core_patch.patch(tiny, PatchRequest(CLEAN, CORRUPT, target=" Tokyo"))
    assert result.target.token == " Tokyo" and result.corrupt_prob > result.clean_prob


# ---- steering


def test_steering_vector_and_next_token_match_reference(lm):
    request = SteerRequest(CLEAN, add=" Japan", subtract=" France", layer=2, alpha=3.0, max_new_tokens=3, rows=5)
    result = core_steer.steer(lm, request)
    vector = ref.forward(lm.model, ids(lm, " Japan")).stream[2][-1] - ref.forward(lm.model, ids(lm, " France")).stream[2][-1]
    assert result.norm == pytest.approx(float(vector.norm()), rel=1e-5)
    expected = ref.probs(ref.forward(lm.model, ids(lm, CLEAN), ref.Edits(steer=(2, 3.0 * vector))))
    for candidate in result.shift.after:
        assert candidate.prob == pytest.approx(float(expected[candidate.id]), abs=TOL)


def test_steered_generation_matches_a_reference_loop(tiny):
    # greedy: each new token is the argmax of the from-scratch pass over the whole sequence, steered everywhere
    request = SteerRequest(CLEAN, add=" Japan", subtract=" France", layer=2, alpha=4.0, max_new_tokens=4)
    result = core_steer.steer(tiny, request)
    steer = core_steer.steering(tiny, " Japan", " France", 2, 4.0)
    sequence = ids(tiny, CLEAN)
    for _ in range(4):
        trace = ref.forward(tiny.model, sequence, ref.Edits(steer=(2, 4.0 * steer.vector.double())))
        sequence.append(int(trace.logits.argmax()))
        if sequence[-1] in tiny.end_token_ids:
            break
    expected = tiny.tokenizer.decode(sequence[len(ids(tiny, CLEAN)):], skip_special_tokens=True)
    assert result.steered.strip() == expected.strip()
    assert result.unsteered.startswith(" Paris") and result.steered != result.unsteered


def test_sampled_steer_uses_one_seed_for_both(tiny):
    request = SteerRequest(CLEAN, add=" Japan", layer=1, alpha=0.0, params=SamplingParams(temperature=1.0, seed=7),
                           max_new_tokens=8)
    result = core_steer.steer(tiny, request)
    assert result.seed == 7 and result.steered == result.unsteered  # alpha 0: the same seed gives the same text
    assert result.shift.kl == pytest.approx(0.0, abs=1e-9)


# ---- hooks leave no trace


def test_every_intervention_leaves_the_model_as_it_was(tiny):
    before = model_logits(tiny)
    core_ablate.ablate(tiny, AblateRequest(CLEAN, sweep="heads", mode="mean"))
    core_ablate.ablate(tiny, AblateRequest(CLEAN, sweep="layers"))
    core_ablate.ablate(tiny, AblateRequest(CLEAN, heads=((0, 1),)))
    core_patch.patch(tiny, PatchRequest(CLEAN, CORRUPT, part="mlp"))
    core_steer.steer(tiny, SteerRequest(CLEAN, add=" Japan", max_new_tokens=3))
    assert torch.equal(model_logits(tiny), before) and no_hooks_left(tiny.model)


def test_an_edit_that_raises_leaves_no_hook(tiny):
    before = model_logits(tiny)
    block = hooks.blocks(tiny.model)[1]

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("edit failed")

    installs = [hooks.on_output(block.mlp, lambda x: x * 0), hooks.on_input(block.out_proj, broken)]
    with pytest.raises(RuntimeError, match="edit failed"), hooks.installed(installs):
        hooks.last_logits(tiny, ids(tiny, CLEAN))
    assert torch.equal(model_logits(tiny), before) and no_hooks_left(tiny.model)


def test_a_failing_install_removes_those_already_in(tiny):
    block = hooks.blocks(tiny.model)[0]

    def refuses():
        raise BadInput("no such part")

    with pytest.raises(BadInput), hooks.installed([hooks.on_output(block.mlp, lambda x: x * 0), refuses]):
        pass
    assert no_hooks_left(tiny.model)


def test_ctrl_c_mid_sweep_leaves_no_trace(tiny, monkeypatch):
    before = model_logits(tiny)
    real, calls = hooks.last_logits, []

    def interrupted(lm, ids, batch=1):
        calls.append(batch)
        if len(calls) == 3:  # the second layer of the sweep, its hooks in place
            raise KeyboardInterrupt
        return real(lm, ids, batch)

    monkeypatch.setattr(hooks, "last_logits", interrupted)
    with pytest.raises(KeyboardInterrupt):
        core_ablate.ablate(tiny, AblateRequest(CLEAN, sweep="heads"))
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        core_patch.patch(tiny, PatchRequest(CLEAN, CORRUPT))
    monkeypatch.undo()
    assert torch.equal(model_logits(tiny), before) and no_hooks_left(tiny.model)


def test_ctrl_c_mid_steered_stream_leaves_no_trace(tiny):
    from lookinside.core.decoding.generate import generate

    before = model_logits(tiny)
    steer = core_steer.steering(tiny, " Japan", None, 1, 4.0)
    stream = core_steer.steered(tiny, generate(tiny, ids(tiny, CLEAN), SamplingParams(temperature=0)), steer)
    next(stream)
    assert no_hooks_left(tiny.model)  # between steps the steer is off
    stream.close()
    assert torch.equal(model_logits(tiny), before)


# ---- requests: refused before loading


@pytest.mark.parametrize("kwargs, message", [
    ({}, "say what to ablate"),
    ({"heads": ((0, 1),), "layer": 1}, "only one of them"),
    ({"layer": 1, "part": "ffn"}, "--part must be one of attn, mlp, block"),
    ({"layer": 1, "mode": "random"}, "--mode must be one of zero, mean"),
    ({"sweep": "neurons"}, "--sweep must be one of heads, layers"),
    ({"layer": 1.5}, "--layer must be a whole number"),
])
def test_ablate_request_refuses(kwargs, message):
    with pytest.raises(BadInput, match=message):
        AblateRequest(CLEAN, **kwargs)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -float("inf"), True])
def test_steer_request_refuses_alpha(alpha):
    with pytest.raises(BadInput, match="--alpha must be a finite number"):
        SteerRequest(CLEAN, add="x", alpha=alpha)


def test_parse_head():
    assert parse_head("3.1") == (3, 1) and parse_head("-1.-2") == (-1, -2)
    with pytest.raises(BadInput, match="LAYER.HEAD"):
        parse_head("3")


# ---- the commands


def run_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--model", "tiny", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_patch_json_and_api_agree(tiny):
    data = run_json("patch", "--clean", CLEAN, "--corrupt", CORRUPT)
    assert data == li.patch(tiny, CLEAN, CORRUPT).to_dict()
    assert data["target"]["token"] == " Paris" and data["layer_names"][0] == "embeddings"
    assert len(data["prob"]) == tiny.config.num_hidden_layers + 1 and len(data["prob"][0]) == len(data["tokens"])
    assert data["prob"][-1][-1] == pytest.approx(data["clean_prob"], abs=1e-6) and data["corrupt_prob"] < 0.01


def test_ablate_json_and_api_agree(tiny):
    data = run_json("ablate", CLEAN, "--sweep", "heads", "--mode", "mean")
    assert data == li.ablate(tiny, CLEAN, sweep="heads", mode="mean").to_dict()
    assert data["shift"] is None and data["sweep"] == "heads"
    assert len(data["grid"]["values"]) == len(data["grid"]["rows"]) == tiny.config.num_hidden_layers
    single = run_json("ablate", CLEAN, "--head", "0.1", "--head", "1.2", "-k", "3")
    assert single == li.ablate(tiny, CLEAN, heads=["0.1", (1, 2)], top_k=3).to_dict()
    assert single["ablated"] == ["head 0.1", "head 1.2"] and len(single["shift"]["after"]) == 3


def test_steer_json_and_api_agree(tiny):
    data = run_json("steer", CLEAN, "--add", " Japan", "--subtract", " France", "--layer", "2", "-n", "5")
    assert data == li.steer(tiny, CLEAN, add=" Japan", subtract=" France", layer=2, max_new_tokens=5).to_dict()
    assert data["seed"] is None and data["unsteered"].startswith(" Paris") and data["shift"]["kl"] > 0


def test_svg_and_html_copies(tmp_path):
    svg, page = tmp_path / "patch.svg", tmp_path / "sweep.html"
    assert runner.invoke(app, ["patch", "--clean", CLEAN, "--corrupt", CORRUPT, "--model", "tiny", "--svg", str(svg)]
                         ).exit_code == 0
    assert runner.invoke(app, ["ablate", CLEAN, "--sweep", "heads", "--model", "tiny", "--html", str(page)]
                         ).exit_code == 0
    assert svg.read_text().startswith("<svg") and "Paris" in svg.read_text()
    assert "largest drop" in page.read_text()


def test_views_draw(tiny):
    for args in (["patch", "--clean", CLEAN, "--corrupt", CORRUPT], ["ablate", CLEAN, "--sweep", "layers"],
                 ["ablate", CLEAN, "--layer", "0", "--part", "attn"], ["steer", CLEAN, "--add", " Japan", "-n", "3"]):
        result = runner.invoke(app, [*args, "--model", "tiny", "--device", "cpu"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert "Paris" in result.stdout
    out = runner.invoke(app, ["patch", "--clean", CLEAN, "--corrupt", CORRUPT, "--model", "tiny"]).stdout
    assert "last layer, last position" in out and "position 4 ␣Japan layer 0" in out


def test_wide_heat_maps_fit_80_columns():
    # Phi-3-mini: 33 depths x positions, 32 layers x 32 heads: glyph cells, one line per row
    import io

    from rich.console import Console

    from lookinside.core.inside.interventions.records import AblationResult, Grid, PatchResult
    from lookinside.core.records import Candidate, Piece
    from lookinside.ui.interventions import ablate_view, patch_map, sweep_map

    tokens = tuple(Piece(i, 100 + i, f"▁w{i}", f" word{i}", "text") for i in range(12))
    values = tuple(tuple(((d * 7 + p) % 10) / 10 for p in range(12)) for d in range(33))
    patched = PatchResult("m", "a", "b", tokens, tokens, Candidate(1, 5, " Paris", 0.9), 0.9, 0.0, "resid", values)
    grid = Grid(tuple(f"layer {i}" for i in range(32)), tuple(f"head {h}" for h in range(32)),
                tuple(tuple(((i + h) % 9) / 10 for h in range(32)) for i in range(32)))
    for table, rows in ((patch_map(patched), 12), (sweep_map(grid, 0.9), 32)):
        console = Console(file=io.StringIO(), width=80, no_color=True)
        console.print(table)
        lines = console.file.getvalue().splitlines()
        assert len(lines) == rows + 1 and max(len(line) for line in lines) <= 80
        assert lines[0].split() == [*(["layer", "→"] if rows == 12 else []), "0", "4", "8", "12", "16", "20", "24",
                                    "28", *(["32"] if rows == 12 else [])]
    sweep = AblationResult("m", "p", tokens, "zero", (), None, "heads", Candidate(1, 5, " Paris", 0.9), grid)
    console = Console(file=io.StringIO(), width=80, no_color=True)
    console.print(ablate_view(sweep))
    assert "largest drop: layer 0, head 0: 0.9000 → 0.0000" in console.file.getvalue()


@pytest.mark.parametrize("args, message", [
    (["ablate", CLEAN, "--head", "9.0"], "--head's layer must be between 0 and 3"),
    (["ablate", CLEAN, "--head", "0.4"], "--head's head must be between 0 and 3"),
    (["ablate", CLEAN, "--layer", "4"], "--layer must be between 0 and 3"),
    (["ablate", CLEAN, "--layer", "0", "--part", "moe"], "--part must be one of"),
    (["steer", CLEAN, "--add", "x", "--alpha", "nan"], "--alpha must be a finite number"),
    (["steer", CLEAN, "--add", "x", "--layer", "5"], "--layer must be between 0 and 4"),
    (["patch", "--clean", CLEAN, "--corrupt", "The capital of the Netherlands is"],
     "clean is 6 (<s>| The| capital| of| France| is), corrupt 7"),
    (["patch", "--clean", CLEAN, "--corrupt", CORRUPT, "--target", " the capital"], "--target must be one token"),
    (["patch", "--clean", CLEAN], "give both prompts"),
    (["patch", "--clean", "word " * 600, "--corrupt", "word " * 600], "more than the model's context"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = runner.invoke(app, [*args, "--model", "tiny", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["patch", "--clean", CLEAN, "--corrupt", CORRUPT], "does not show its"),
    (["steer", CLEAN, "--add", "x"], "residual stream to steer"),
])
def test_a_server_that_only_generates_is_refused_in_one_line(args, message):
    from .fake_openai import FakeServer

    with FakeServer() as url:  # an OpenAI-compatible server, not `llm serve`: no insides
        result = runner.invoke(app, [*args, "--endpoint", url, "--api-key", "sekret-key-123"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_logits_that_are_not_numbers_stop_with_one_line(tiny, monkeypatch):
    # a NaN must never reach --json: the intervention stops with a message instead
    before = model_logits(tiny)
    monkeypatch.setattr(hooks, "ablated", lambda x, rows, mode: x * float("nan"))
    result = runner.invoke(app, ["ablate", CLEAN, "--layer", "1", "--part", "mlp", "--model", "tiny", "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == ("error: the model's logits are not numbers (NaN or all infinite) in torch.float32 "
                                     "with this intervention; try --dtype float32")
    monkeypatch.undo()
    assert torch.equal(model_logits(tiny), before) and no_hooks_left(tiny.model)


def test_a_part_the_architecture_lacks(tiny, monkeypatch):
    block = hooks.blocks(tiny.model)[0]
    monkeypatch.setattr(hooks, "blocks", lambda model: [hooks.Block(0, block.module, None, None, None)])
    with pytest.raises(BadInput, match="block 0 \\(Phi3DecoderLayer\\) has no mlp part"):
        core_ablate.ablate(tiny, AblateRequest(CLEAN, layer=0, part="mlp"))
    with pytest.raises(BadInput, match="no attention output projection"):
        core_ablate.ablate(tiny, AblateRequest(CLEAN, sweep="heads"))


# ---- chat's /steer


def test_chat_steer_sets_shows_and_clears(tiny):
    import io

    from rich.console import Console

    from .test_chat import ENTER, chat

    question = "What is the capital of France?"
    run = chat(tiny, f"/steer 2 4 Japan | France{ENTER}{question}{ENTER}/steer{ENTER}/steer off{ENTER}{question}{ENTER}"
                     f"/steer two 4 Japan{ENTER}/steer 9 4 Japan{ENTER}/steer 1 nan Japan{ENTER}", stats=True,
               console=Console(file=io.StringIO(), width=200, highlight=False))
    lines = run.out.splitlines()
    steer = "steer 4 x ('Japan' - 'France') at layer 2"
    assert lines[0] == f"{steer} on every reply"
    replies = [m["content"] for m in run.messages if m["role"] == "assistant"]
    assert replies[1] == "The capital of France is Paris." and replies[0] != replies[1]
    stats = [line for line in lines if "generated tokens" in line]
    assert stats[0].endswith("· steer on (layer 2, alpha 4)") and "steer" not in stats[1]  # the stats line says when a steer is on
    assert f"{steer}" in lines and "steer off" in lines
    assert lines[-3].startswith("/steer LAYER ALPHA ADD [| SUBTRACT], e.g.")
    assert lines[-2].startswith("--layer must be between 0 and 4")
    assert lines[-1] == "--alpha must be a finite number, not nan"
    assert no_hooks_left(tiny.model)


# ---- TransformerLens


@pytest.mark.slow
def test_transformerlens_agrees():
    # scripts/compare_transformerlens.py exits 1 when any difference is above its tolerance (1e-4)
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("transformer_lens")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "scripts" / "compare_transformerlens.py")],
                            capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "patching resid" in result.stdout and "head sweep, mean" in result.stdout


def test_chat_steer_needs_the_model_here_or_llm_serve():
    from lookinside.core.backends.remote import RemoteBackend, RemoteSpec
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.session import ChatSession

    vllm = RemoteBackend(None, RemoteSpec("http://127.0.0.1:9/v1", None, "m"), 512, owner="vllm")  # asks nothing
    session = ChatSession(vllm, Conversation())  # a server that does not let us add to its residual stream
    with pytest.raises(BadInput, match="/steer needs the model here or an `llm serve`: a vLLM server does not"):
        session.set_steer("Japan", None, 1, 4.0)


# ---- the notebook


@pytest.mark.slow
def test_the_interventions_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from pathlib import Path

    from .test_notebook import _text, _this_python_as_the_kernel

    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "examples" / "interventions.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean
    _this_python_as_the_kernel(monkeypatch, tmp_path / "jupyter")
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = {cell.source.splitlines()[0]: "\n".join(_text(o) for o in cell.outputs)
           for cell in notebook.cells if cell.cell_type == "code"}
    assert "half or more given back at: position 4 ␣Japan layer 0" in out['patched = li.patch(lm, "The capital '
                                                                          'of France is", "The capital of Japan is")']
    assert out["print(patched.prob[-1][-1], patched.clean_prob, patched.prob[-1][-1] == patched.clean_prob)"
               ].strip().endswith("True")
    assert "largest drop: layer 0, head 1" in out['li.ablate(lm, "The capital of France is", sweep="heads")']
    assert "rank 1 → " in out['li.ablate(lm, "The capital of France is", layer=0, part="attn", top_k=5)']
    assert "The capital of France is Paris." in out['steered = li.steer(lm, "The capital of France is", '
                                                    'add=" Japan", subtract=" France", layer=2, alpha=4)']
