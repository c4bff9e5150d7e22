"""What a new user hit on a fresh clone (issue 32): a chat reply's first space, the steer defaults, the GGUF
writer, the notebooks, --dtype's help, the heat map's scale."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from lookinside.cli.app import app

runner = CliRunner()
QUESTION = "What is the capital of Japan?"


# ---- item 7: a chat reply starts with its first word, in `llm generate --chat` and on the OpenAI chat route


def test_generate_chat_starts_with_the_first_word():
    result = runner.invoke(app, ["generate", QUESTION, "--chat", "--model", "tiny", "-t", "0", "--no-server"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "The capital of Japan is Tokyo.\n"


def test_the_openai_chat_route_starts_with_the_first_word(tiny):
    from lookinside.core.model.spec import LoadSpec
    from lookinside.serve.app import create_app
    from lookinside.serve.settings import ServeSettings

    body = {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 12, "temperature": 0}
    app = create_app(tiny, ServeSettings(spec=LoadSpec(model="tiny", device="cpu")))
    with TestClient(app, base_url="http://127.0.0.1") as client:  # a local client's Host, as llm serve wants
        whole = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            chunks = [line for line in response.iter_lines() if line.startswith("data: {")]
    import json

    deltas = [json.loads(c[6:])["choices"][0]["delta"].get("content") or "" for c in chunks]
    assert whole == "The capital of Japan is Tokyo." == "".join(deltas)


def test_a_plain_prompt_keeps_the_space_before_its_next_word(tiny):
    from lookinside.core.decoding.detokenize import IncrementalDecoder

    context = tiny.tokenizer("The capital of France is").input_ids
    paris = tiny.tokenizer(" Paris", add_special_tokens=False).input_ids
    decoder = IncrementalDecoder(tiny.tokenizer, context=context)
    assert "".join(decoder.push(i) for i in paris) == " Paris"


# ---- item 6: scripts/hf_to_gguf.py keeps <s> and says what it wrote


def test_hf_to_gguf_keeps_the_bos_and_the_probabilities(tiny, tmp_path, capsys):
    import sys
    from pathlib import Path

    pytest.importorskip("gguf")
    import lookinside as li
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec
    from lookinside.tiny import ASSETS

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from hf_to_gguf import convert
    finally:
        sys.path.pop(0)
    out = convert(ASSETS, tmp_path / "tiny.gguf")
    said = capsys.readouterr().err
    assert f"wrote {out}: phi3, 4 blocks" in said and "prompts start with <s>: yes" in said
    gguf_lm = load(LoadSpec(model=str(out), device="cpu", threads=1))
    prompt = "The capital of France is"
    assert gguf_lm.tokenizer(prompt).input_ids == tiny.tokenizer(prompt).input_ids  # <s> first, 6 tokens
    here, there = li.next_token(tiny, prompt).record, li.next_token(gguf_lm, prompt).record
    assert there.top[0].token == " Paris"
    assert abs(there.top[0].prob - here.top[0].prob) < 1e-4


# ---- item 9: --dtype's help says what auto does on the CPU; the heat map has a colour scale


def test_dtype_help_says_what_auto_does_on_the_cpu():
    result = runner.invoke(app, ["next-token", "--help"])
    text = " ".join(result.output.replace("│", " ").split())  # the help's lines joined back
    assert "float32 on CPU" not in text
    assert "bfloat16 checkpoint stays bfloat16 where the CPU has bfloat16 arithmetic, else float32" in text


def test_the_png_heat_map_has_a_colour_scale(tiny):
    pytest.importorskip("PIL")
    import lookinside as li
    from lookinside.ui.attention import heat_rgb
    from lookinside.ui.attention_png import SCALE, render_png

    image = render_png(li.attention(tiny, "The capital of France is", layer=1, head=0).record)
    left, top, right, bottom = SCALE
    middle = (top + bottom) // 2
    for share in (0, 0.5, 1):
        x = round(left + share * (right - left))
        assert image.getpixel((x, middle)) == heat_rgb((x - left) / (right - left))
    assert image.getpixel((left, middle)) != image.getpixel((right, middle))  # dark blue to yellow


# ---- item 4: README's form of steer (--add alone, the defaults) shows a readable steer


def test_steer_with_the_defaults_stays_readable_and_shows(tiny):
    import lookinside as li
    from lookinside.core.inside.interventions.steer import STEER_SIZE, ids_stream, stream_at

    prompt = "The capital of France is"
    result = li.steer(tiny, prompt, add=" Japan").record
    assert result.layer == 2  # the middle of tiny's 4 blocks
    ids = tiny.tokenizer(result.steered, add_special_tokens=False).input_ids
    assert ids and not any(len(set(ids[i : i + 4])) == 1 for i in range(len(ids) - 3))  # not ''''''''
    assert result.shift.kl is not None and result.shift.kl > 0.01  # the steer shows in the next-token table
    prompt_ids = tiny.tokenizer(prompt).input_ids
    size = result.alpha * result.norm / float(ids_stream(tiny, prompt_ids, 2).norm())
    assert abs(size - STEER_SIZE) < 1e-4 and abs(result.norm - float(stream_at(tiny, " Japan", 2).norm())) < 1e-3


def test_an_explicit_layer_and_alpha_are_kept(tiny):
    import lookinside as li

    result = li.steer(tiny, "The capital of France is", add=" Japan", subtract=" France", layer=2, alpha=4).record
    assert (result.layer, result.alpha, result.steered) == (2, 4.0, " City.")
