"""The generation core: cache on == cache off, equal to model.generate, seeds, end tokens, stop strings."""

from __future__ import annotations

import pytest
import torch

from lookinside.core.decoding.generate import collect, generate
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.errors import BadInput, ContextOverflow
from lookinside.core.request import GenerationSettings
from lookinside.core.sampling_params import SamplingParams

from .conftest import random_model_dir, small_config

GREEDY = SamplingParams(temperature=0)
N = 24


@pytest.fixture(scope="module", params=["phi3-gqa", "llama"])
def random_lm(request, tmp_path_factory):
    """A small random model of a real family with the tiny tokenizer, loaded like any local model."""
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    path = random_model_dir(tmp_path_factory.mktemp(request.param), small_config(request.param))
    return load(LoadSpec(model=str(path), device="cpu"))


def _prompt(lm, text="The capital of France is"):
    return encode_prompt(lm.tokenizer, text)


def _hf(lm, prompt_ids, n, **kwargs):
    """model.generate's new ids; eos_token_id=[] lets it run all n tokens like ignore_eos."""
    out = lm.model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, pad_token_id=0, **kwargs)
    return out[0, len(prompt_ids):].tolist()


@pytest.mark.parametrize("cache", ["static", "none"])
def test_tiny_greedy_is_the_same_with_and_without_the_cache(tiny, cache):
    prompt = _prompt(tiny, "Write an email to Sarah")
    config = GenerationSettings(max_new_tokens=N, ignore_eos=True)
    dynamic = collect(tiny, prompt, GREEDY, config)
    other = collect(tiny, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True, cache=cache))
    assert len(dynamic.token_ids) == N and other.token_ids == dynamic.token_ids


@pytest.mark.parametrize("cache", ["static", "none"])
def test_random_model_greedy_is_the_same_with_and_without_the_cache(random_lm, cache):
    prompt = _prompt(random_lm)
    dynamic = collect(random_lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    other = collect(random_lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True, cache=cache))
    assert other.token_ids == dynamic.token_ids
    assert len(set(dynamic.token_ids)) > 3  # a random model wanders: the ids really test the cache


def test_greedy_equals_model_generate(random_lm):
    prompt = _prompt(random_lm)
    ours = collect(random_lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    assert ours.token_ids == _hf(random_lm, prompt, N, do_sample=False, eos_token_id=[])


def test_greedy_with_repetition_penalty_equals_model_generate(random_lm):
    prompt = _prompt(random_lm)
    params = SamplingParams(temperature=0, repetition_penalty=1.3)
    ours = collect(random_lm, prompt, params, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    assert ours.token_ids == _hf(random_lm, prompt, N, do_sample=False, eos_token_id=[], repetition_penalty=1.3)
    plain = collect(random_lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    assert ours.token_ids != plain.token_ids  # the penalty really changed the path


def test_tiny_greedy_equals_model_generate_and_both_stop_at_the_end_token(tiny):
    prompt = encode_prompt(tiny.tokenizer, "What is the capital of Japan?", chat=True)
    ours = collect(tiny, prompt, GREEDY, GenerationSettings(max_new_tokens=40))
    assert ours.token_ids == _hf(tiny, prompt, 40, do_sample=False)
    assert ours.finish == "eos" and ours.token_ids[-1] in tiny.end_token_ids
    assert "Tokyo" in ours.text and "<|end|>" not in ours.text  # the end token ends the run, it is not text


def test_sampling_equals_model_generate_with_the_same_seed(random_lm):
    """On the CPU a Generator seeded s draws as the global RNG seeded s does, so the two samplers must agree."""
    prompt = _prompt(random_lm)
    params = SamplingParams(temperature=0.8, top_k=50, top_p=0.95, seed=11)
    ours = collect(random_lm, prompt, params, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    torch.manual_seed(11)
    theirs = _hf(random_lm, prompt, N, do_sample=True, temperature=0.8, top_k=50, top_p=0.95, eos_token_id=[])
    assert ours.token_ids == theirs


def test_the_same_seed_gives_the_same_samples_and_others_differ(random_lm):
    prompt = _prompt(random_lm)
    config = GenerationSettings(max_new_tokens=N, ignore_eos=True)
    runs = [collect(random_lm, prompt, SamplingParams(seed=seed), config) for seed in (5, 5, 6)]
    assert runs[0].token_ids == runs[1].token_ids and runs[0].seed == 5
    assert runs[0].token_ids != runs[2].token_ids


def test_an_unseeded_sampling_run_shows_its_seed_and_it_reproduces_the_run(tiny):
    prompt = _prompt(tiny, "The")
    config = GenerationSettings(max_new_tokens=12, ignore_eos=True)
    stream = generate(tiny, prompt, SamplingParams(temperature=1.5), config)
    assert isinstance(stream.seed, int)  # known before the first step
    first = [step.token_id for step in stream]
    again = collect(tiny, prompt, SamplingParams(temperature=1.5, seed=stream.seed), config)
    assert again.token_ids == first and again.seed == stream.seed
    assert collect(tiny, prompt, SamplingParams(temperature=1.5), config).seed is not None
    assert generate(tiny, prompt, GREEDY, config).seed is None


def test_each_end_token_of_the_generation_config_stops_the_run(tmp_path):
    """Whichever of several end ids comes up stops generation (Phi-3 has three)."""
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    lm = load(LoadSpec(model=str(random_model_dir(tmp_path, small_config("phi3-gqa"))), device="cpu"))
    prompt = _prompt(lm)
    free = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True)).token_ids
    third = free[2]
    others = [i for i in range(900, 903) if i not in free[:3]]
    lm.model.generation_config.eos_token_id = [others[0], third, others[1]]
    stopped = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N))
    assert stopped.token_ids == free[:3] and stopped.finish == "eos"
    assert stopped.steps[-1].text == "" and stopped.text == collect(
        lm, prompt, GREEDY, GenerationSettings(max_new_tokens=2)).text
    ignoring = collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=N, ignore_eos=True))
    assert ignoring.token_ids == free and ignoring.finish == "length"


def test_tiny_end_tokens_are_phi3s_three(tiny):
    names = tiny.tokenizer.convert_ids_to_tokens(tiny.end_token_ids)
    assert set(names) == {"<|assistant|>", "<|end|>", "<|endoftext|>"}


def test_max_new_tokens_ends_with_length(tiny):
    run = collect(tiny, _prompt(tiny, "Write an email to Sarah"), GREEDY, GenerationSettings(max_new_tokens=5))
    assert len(run.steps) == 5 and run.finish == "length"
    assert [s.finish for s in run.steps] == [None] * 4 + ["length"]
    assert [s.index for s in run.steps] == [0, 1, 2, 3, 4]


def test_a_stop_string_ends_the_run_and_is_cut_from_the_text(tiny):
    prompt = encode_prompt(tiny.tokenizer, "What is the capital of Japan?", chat=True)
    full = collect(tiny, prompt, GREEDY, GenerationSettings(max_new_tokens=40))
    run = collect(tiny, prompt, GREEDY, GenerationSettings(max_new_tokens=40, stop_strings=("Tokyo",)))
    assert run.finish == "stop" and "Tokyo" not in run.text
    assert full.text.startswith(run.text) and full.text[len(run.text):].startswith("Tokyo")
    assert len(run.steps) < len(full.steps)


def test_steps_describe_the_raw_distribution(tiny):
    run = collect(tiny, _prompt(tiny), GREEDY, GenerationSettings(max_new_tokens=8))
    assert run.text.startswith(" Paris")
    for step in run.steps:
        assert step.rank == 1 and step.top[0][0] == step.token_id and step.top[0][1] == pytest.approx(step.prob)
        assert 0 < step.prob <= 1 and step.seconds > 0
        assert [p for _, p in step.top] == sorted((p for _, p in step.top), reverse=True)
    assert run.perplexity >= 1 and run.mean_logprob <= 0


def test_sampled_steps_report_ranks_under_the_raw_distribution(tiny):
    run = collect(tiny, _prompt(tiny, "The"), SamplingParams(temperature=3.0, seed=3),
                  GenerationSettings(max_new_tokens=16, ignore_eos=True))
    assert any(step.rank > 1 for step in run.steps)  # a hot temperature picks unlikely tokens...
    for step in run.steps:  # ...and their rank agrees with the top list whenever it is in it
        ids = [i for i, _ in step.top]
        assert step.token_id not in ids or ids.index(step.token_id) + 1 == step.rank


def test_breaking_out_stops_generation(tiny):
    stream = generate(tiny, _prompt(tiny, "Write an email to Sarah"), GREEDY, GenerationSettings(max_new_tokens=50))
    steps = [next(stream), next(stream)]
    stream.close()
    assert [s.index for s in steps] == [0, 1] and next(stream, None) is None


def test_the_consumer_never_runs_inside_inference_mode(tiny):
    stream = generate(tiny, _prompt(tiny, "Write an email to Sarah"), GREEDY, GenerationSettings(max_new_tokens=5))
    next(stream)
    assert not torch.is_inference_mode_enabled()  # a half-consumed stream leaves no global mode behind
    assert len(list(stream)) == 4 and not torch.is_inference_mode_enabled()


def test_ctrl_c_keeps_what_came_so_far(tiny, monkeypatch):
    import lookinside.core.decoding.generate as core

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = core.decode_one_token
    monkeypatch.setattr(core, "decode_one_token", interrupted)
    run = collect(tiny, _prompt(tiny, "Write an email to Sarah"), GREEDY, GenerationSettings(max_new_tokens=20),
                  keep_on_interrupt=True)
    assert len(run.steps) == 3 and run.finish == "interrupted" and run.interrupted
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        collect(tiny, _prompt(tiny, "Write an email to Sarah"), GREEDY, GenerationSettings(max_new_tokens=20))


def test_a_random_model_never_crashes_the_decoder(random_lm):
    """Random weights emit any id, byte pieces and unused ids included; text must still come out."""
    run = collect(random_lm, _prompt(random_lm), SamplingParams(temperature=5.0, seed=0),
                  GenerationSettings(max_new_tokens=48, ignore_eos=True))
    assert len(run.steps) == 48 and isinstance(run.text, str)


def test_bad_requests_are_refused_before_generating(tiny):
    with pytest.raises(ContextOverflow, match="more than the model's context of 512"):
        generate(tiny, [1] * 500, GREEDY, GenerationSettings(max_new_tokens=20))  # eager: no next() needed
    for bad in ({"max_new_tokens": 0}, {"cache": "paged"}, {"stop_strings": ("",)}):
        with pytest.raises(BadInput):
            GenerationSettings(**bad)
    assert GenerationSettings(stop_strings="END").stop_strings == ("END",)  # type: ignore[arg-type]


@pytest.mark.slow
def test_phi3_mini_shaped_model_agrees_with_itself_and_with_generate(tmp_path, phi3_tokenizer_dir):
    """Phi-3-mini's real config (2 of its 32 layers, sliding window, vocab 32064), random bf16 weights."""
    import shutil

    from lookinside.core.model.loading import load, load_config_offline
    from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec

    config = load_config_offline(DEFAULT_MODEL)
    config.num_hidden_layers = 2
    config.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(phi3_tokenizer_dir / name, tmp_path / name)
    lm = load(LoadSpec(model=str(tmp_path), device="cpu", dtype="float32", random_weights=True))
    prompt = _prompt(lm)
    n = 6  # the random init of 0.4 B parameters is most of this test's time; "none" is covered above
    runs = {cache: collect(lm, prompt, GREEDY, GenerationSettings(max_new_tokens=n, ignore_eos=True, cache=cache))
            for cache in ("dynamic", "static")}
    assert runs["dynamic"].token_ids == runs["static"].token_ids
    assert runs["dynamic"].token_ids == _hf(lm, prompt, n, do_sample=False, eos_token_id=[])


def _scripted(monkeypatch, script: list[int]) -> None:
    """Make the model's forward pass put all the mass on script[k] at step k (the loop itself stays real)."""
    import lookinside.core.decoding.generate as core

    calls = iter(script)

    def forward(lm, ids, cache):
        logits = torch.full((1, max(lm.model.config.vocab_size, len(lm.tokenizer))), -30.0)  # (1, vocab)
        logits[0, next(calls)] = 30.0
        return logits

    monkeypatch.setattr(core, "_forward", forward)


@pytest.mark.parametrize("which", ["tiny", "phi3"])
def test_a_streamed_emoji_arrives_whole_through_the_loop(tiny, monkeypatch, request, which):
    from dataclasses import replace

    lm = tiny
    if which == "phi3":
        from transformers import AutoTokenizer

        lm = replace(tiny, tokenizer=AutoTokenizer.from_pretrained(str(request.getfixturevalue("phi3_tokenizer_dir"))))
    reply = lm.tokenizer(" I love 🦙s", add_special_tokens=False).input_ids
    assert ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"] == [
        p for p in lm.tokenizer.convert_ids_to_tokens(reply) if p.startswith("<0x")]
    _scripted(monkeypatch, [*reply, tiny.end_token_ids[0]])
    run = collect(lm, encode_prompt(lm.tokenizer, "Say"), GREEDY, GenerationSettings(max_new_tokens=20))
    texts = [step.text for step in run.steps]
    assert "\ufffd" not in "".join(texts) and run.finish == "eos"
    assert run.text.strip() == "I love 🦙s" and any(t in ("🦙", " 🦙") for t in texts)
    assert texts.count("") == 4  # three held bytes, and the end token


def test_bytes_cut_off_by_the_end_token_show_as_one_replacement(tiny, monkeypatch):
    """A random model can stop inside a character: the held bytes come out (as U+FFFD), never vanish or raise."""
    f0, x9f = tiny.tokenizer.convert_tokens_to_ids(["<0xF0>", "<0x9F>"])
    _scripted(monkeypatch, [f0, x9f, tiny.end_token_ids[0]])
    run = collect(tiny, _prompt(tiny, "Say"), GREEDY, GenerationSettings(max_new_tokens=20))
    assert [s.text for s in run.steps[:2]] == ["", ""] and "\ufffd" in run.steps[-1].text
    assert run.finish == "eos"
