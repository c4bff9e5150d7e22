"""The conversation as data: settings, token counts through the template, trimming, transcripts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from lookinside.core.chat import conversation as conv
from lookinside.core.chat import defaults, transcripts
from lookinside.core.chat import stats as reply
from lookinside.core.chat.conversation import Conversation, fit
from lookinside.core.chat.defaults import ChatSettings, chat_defaults, chat_settings
from lookinside.core.errors import BadInput, ContextOverflow
from lookinside.core.sampling_params import SamplingParams


def long_chat(turns: int, system: str | None = "Answer briefly.", **settings) -> Conversation:
    chat = Conversation(system=system, settings=ChatSettings(**settings))
    for i in range(turns):
        chat.add("user", f"Question number {i}: what is the capital of France and why is it that city?")
        chat.add("assistant", f"Answer number {i}: the capital of France is Paris, for historical reasons.")
    chat.add("user", "What is the capital of Japan?")
    return chat


# ---- settings


def test_set_parses_and_validates_each_name():
    settings = ChatSettings()
    assert settings.updated("temperature", "0.2").params.temperature == 0.2
    assert settings.updated("top_k", "40").params.top_k == 40
    assert settings.updated("top_p", "0.5").params.top_p == 0.5
    assert settings.updated("min_p", "0.1").params.min_p == 0.1
    assert settings.updated("repetition_penalty", "1.2").params.repetition_penalty == 1.2
    assert settings.updated("seed", "7").params.seed == 7
    assert settings.updated("seed", "7").updated("seed", "none").params.seed is None
    assert settings.updated("max_new_tokens", "12").max_new_tokens == 12


@pytest.mark.parametrize(("name", "value", "message"), [
    ("temperature", "hot", "temperature takes a number"),
    ("temperature", "-1", "temperature must be >= 0"),
    ("temperature", "nan", "finite"),
    ("top_k", "2.5", "top_k takes an integer"),
    ("top_p", "0", "top_p must be in (0, 1]"),
    ("min_p", "2", "min_p must be in [0, 1]"),
    ("seed", "-3", "seed must be in [0, 2**63), not -3"),
    ("max_new_tokens", "0", "max_new_tokens must be a whole number >= 1, not 0"),
    ("colour", "blue", "unknown setting 'colour'"),
])
def test_set_refuses_bad_values_with_a_reason(name, value, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        ChatSettings().updated(name, value)


def test_defaults_follow_the_generation_config():
    sampled = SimpleNamespace(do_sample=True, temperature=0.6, top_k=None, top_p=0.95, min_p=None, repetition_penalty=None)
    params, source = chat_defaults(sampled)
    assert (params.temperature, params.top_p, params.top_k) == (0.6, 0.95, 0)
    assert source == "the model's generation config"
    greedy, _ = chat_defaults(SimpleNamespace(do_sample=False, repetition_penalty=1.1))
    assert greedy.greedy and greedy.repetition_penalty == 1.1
    unset, source = chat_defaults(SimpleNamespace(do_sample=None, repetition_penalty=None))
    assert unset == defaults.CHAT_DEFAULT and "sets none" in source


def test_options_override_the_defaults_and_say_so():
    settings = chat_settings(SimpleNamespace(do_sample=None, repetition_penalty=None),
                             {"temperature": 0.0, "top_k": None, "seed": 3}, max_new_tokens=9, trim=False)
    assert settings.params.greedy and settings.params.seed == 3
    assert (settings.max_new_tokens, settings.trim) == (9, False)
    assert settings.source.endswith("then your options")


# ---- messages


def test_undo_takes_back_one_exchange_and_clear_keeps_the_system_prompt():
    chat = long_chat(2)
    chat.add("assistant", "Tokyo.")
    assert chat.undo() == 2 and chat.messages[-1]["content"].startswith("Answer number 1")
    assert chat.pop_reply()["content"].startswith("Answer number 1")
    assert chat.last_reply is None
    chat.clear()
    assert chat.messages == [] and chat.system == "Answer briefly."
    assert chat.undo() == 0


def test_cut_replies_are_marked_but_the_template_never_sees_the_mark():
    chat = Conversation(system="S")
    chat.add("user", "hi")
    chat.add("assistant", "Hello the", cut=True)
    assert chat.messages[-1]["cut"] is True
    assert chat.as_messages() == [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "Hello the"}]


# ---- tokens and trimming (through the tiny model's real chat template)


def test_token_count_is_the_templated_prompt(tiny):
    chat = Conversation(system="Be brief.")
    chat.add("user", "What is the capital of Japan?")
    rendered = tiny.tokenizer.apply_chat_template(chat.as_messages(), tokenize=False, add_generation_prompt=True)
    assert conv.count_tokens(tiny.tokenizer, chat) == len(tiny.tokenizer(rendered, add_special_tokens=False).input_ids)


def test_fit_drops_the_oldest_turns_but_never_the_system_prompt(tiny):
    chat = long_chat(12, max_new_tokens=40)
    full = conv.count_tokens(tiny.tokenizer, chat)
    fitted = fit(tiny.tokenizer, chat, context=200)
    assert full + 40 > 200 and len(fitted.ids) + 40 <= 200
    assert fitted.dropped_turns == chat.window > 0 and fitted.dropped_turns % 2 == 0
    assert fitted.dropped_tokens == full - len(fitted.ids)
    sent = chat.as_messages()
    assert sent[0] == {"role": "system", "content": "Answer briefly."}
    assert sent[1]["role"] == "user" and sent[-1]["content"] == "What is the capital of Japan?"
    assert len(chat.messages) == 25  # dropped turns stay in the transcript


def test_fit_that_needs_nothing_dropped_drops_nothing(tiny):
    chat = long_chat(1)
    fitted = fit(tiny.tokenizer, chat, context=512)
    assert (fitted.dropped_turns, fitted.dropped_tokens, chat.window) == (0, 0, 0)


def test_no_trim_refuses_instead_of_dropping(tiny):
    chat = long_chat(12, max_new_tokens=40, trim=False)
    with pytest.raises(ContextOverflow, match="trimming is off"):
        fit(tiny.tokenizer, chat, context=200)
    assert chat.window == 0


def test_a_message_too_long_on_its_own_is_refused(tiny):
    chat = Conversation(system="S")
    chat.add("user", "Paris " * 400)
    with pytest.raises(ContextOverflow, match="nothing older is left to drop"):
        fit(tiny.tokenizer, chat, context=512)


def test_continuation_gives_the_ids_the_model_itself_generated(tiny):
    from lookinside.core.decoding.generate import generate
    from lookinside.core.request import GenerationSettings

    chat = Conversation()
    chat.add("user", "What is the capital of Japan?")
    prompt = fit(tiny.tokenizer, chat, 512).ids
    steps = list(generate(tiny, prompt, SamplingParams(temperature=0), GenerationSettings(max_new_tokens=3)))
    partial = "".join(s.text for s in steps).strip()
    assert partial == "The capital of"
    chat.add("assistant", partial, cut=True)
    assert fit(tiny.tokenizer, chat, 512, continuation=partial).ids == prompt + [s.token_id for s in steps]


# ---- transcripts


def test_save_then_load_round_trips(tmp_path: Path):
    chat = long_chat(2)
    chat.settings = ChatSettings(params=SamplingParams(temperature=0.3, top_k=20, seed=5), max_new_tokens=64, trim=False)
    chat.add("assistant", "The capital of Japan", cut=True)
    chat.window = 2
    path = transcripts.write_transcript(chat, tmp_path / "sub" / "chat.json", model="tiny", make_parents=True)
    loaded, model = transcripts.read_transcript(path)
    assert model == "tiny"
    assert (loaded.system, loaded.messages, loaded.window) == (chat.system, chat.messages, chat.window)
    assert (loaded.settings.params, loaded.settings.max_new_tokens, loaded.settings.trim) == (
        chat.settings.params, 64, False)
    assert json.loads(path.read_text())["version"] == transcripts.TRANSCRIPT_VERSION
    assert os.listdir(path.parent) == ["chat.json"]  # no temp file left behind


def test_a_failed_save_leaves_the_old_file_whole(tmp_path: Path, monkeypatch):
    path = transcripts.write_transcript(long_chat(1), tmp_path / "chat.json", model="tiny")
    before = path.read_text()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(BadInput, match="disk full; nothing was written"):
        transcripts.write_transcript(long_chat(5), path, model="tiny")
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["chat.json"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "no transcript at"),
    ("{not json", "not a readable JSON transcript"),
    ('{"messages": [{"role": "wizard", "content": "x"}]}', r"messages\[0\].role must be \"user\" or \"assistant\""),
    ('{"messages": [], "settings": {"params": {"temperature": -1}}}', "temperature must be >= 0"),
    ('{"version": 7, "messages": []}', "a transcript of version 7; this lookinside reads versions 1, 2"),
    ("[1, 2]", "not a lookinside transcript"),
])
def test_load_refuses_what_is_not_a_transcript(tmp_path: Path, content, message):
    path = tmp_path / "t.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInput, match=message):
        transcripts.read_transcript(path)


def test_markdown_export(tmp_path: Path):
    chat = Conversation(system="Be brief.")
    chat.add("user", "What is the capital of Japan?")
    chat.add("assistant", "The capital of Japan", cut=True)
    path = transcripts.export_markdown(chat, tmp_path / "chat.md", model="tiny")
    assert path.read_text() == (
        "# Chat with tiny\n\nSettings: temperature=0.7, top_p=0.9, max_new_tokens=256\n\n"
        "## System\n\nBe brief.\n\n## User\n\nWhat is the capital of Japan?\n\n"
        "## Assistant (cut)\n\nThe capital of Japan\n")
    with pytest.raises(BadInput, match="should end in .md"):
        transcripts.export_markdown(chat, tmp_path / "chat.txt", model="tiny")


def test_reply_stats_keep_the_prefill_out_of_the_decode_speed():
    steps = [SimpleNamespace(seconds=0.5), SimpleNamespace(seconds=0.1), SimpleNamespace(seconds=0.1)]
    stats = reply.reply_stats(steps, prompt_tokens=10, context_length=512, seed=4)
    assert (stats.ttft_s, stats.generated_tokens, stats.context_used) == (0.5, 3, 13)
    assert stats.decode_tokens_per_s == pytest.approx(10.0)
    assert reply.reply_stats(steps[:1], 10, 512, None).decode_tokens_per_s is None


def test_phi3_defaults_and_template(phi3_tokenizer_dir):
    from transformers import AutoTokenizer, GenerationConfig

    from lookinside.core.model.loading import CONFIGS

    params, source = chat_defaults(GenerationConfig.from_pretrained(CONFIGS / "phi-3-mini-4k-instruct"))
    assert params == defaults.CHAT_DEFAULT and "sets none" in source  # Phi-3 sets no sampling: /retry must vary
    tokenizer = AutoTokenizer.from_pretrained(phi3_tokenizer_dir)
    chat = long_chat(30, max_new_tokens=64)
    fitted = fit(tokenizer, chat, context=400)
    text = tokenizer.decode(fitted.ids)
    assert fitted.dropped_turns > 0 and len(fitted.ids) + 64 <= 400
    assert text.startswith("<|system|>") and "Answer briefly." in text
    assert text.replace("\n", "").endswith("What is the capital of Japan?<|end|><|assistant|>")
